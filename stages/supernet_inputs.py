"""The trained inputs of the supernet and Shapley stages: the calibrated supernet over the FP model.

Apart from ``stages.inputs`` so that only the stages that build a supernet import ``smpq.supernet``.
"""

from __future__ import annotations

from pathlib import Path

from smpq.artifacts import load_state_dict
from smpq.config import Params
from smpq.cost import CostTable
from smpq.policy import fixed_bits
from smpq.quant import CALIBRATION_FILE, Calibration
from smpq.supernet import Supernet
from stages.inputs import MODEL_FILE, Prepared, build_model


def load_supernet(params: Params, prepared: Prepared, pretrain_dir: Path, calibrate_dir: Path,
                  state: Path | None = None) -> tuple[Supernet, CostTable]:
    """The supernet over the FP model with calibrated steps; trained weights and α from ``state``."""
    table = CostTable.load(calibrate_dir)
    calibration = Calibration.load(calibrate_dir / CALIBRATION_FILE)
    model = build_model(params, prepared, pretrain_dir / MODEL_FILE)
    supernet = Supernet(model, table, params.quant.w_bits, params.quant.a_bits, calibration,
                        fixed_bits(params.quant.first_last, table))
    if state is not None:
        supernet.load_state_dict(load_state_dict(state))
    return supernet, table
