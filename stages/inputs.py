"""Inputs the training stages share: the prepared splits with their card, and the model they describe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from smpq.artifacts import load_state_dict, read_json
from smpq.config import Params
from smpq.cost import CostTable
from smpq.data import CARD_FILE, load_image_set, make_loader
from smpq.models import create_model
from smpq.policy import LayerBits
from smpq.quant import Calibration
from smpq.supernet import Supernet


@dataclass
class Prepared:
    """The splits written by ``prepare`` and the normalisation recorded in their card."""

    folder: Path
    card: dict

    def images(self, split: str):
        return load_image_set(self.folder / f"{split}.pt")

    def loader(self, split: str, *, batch_size: int, seed: int, shuffle: bool = False, augment: bool = False,
               samples_per_epoch: int | None = None):
        norm = self.card["normalization"]
        return make_loader(self.images(split), batch_size=batch_size, mean=norm["mean"], std=norm["std"],
                           shuffle=shuffle, seed=seed, augment=augment, samples_per_epoch=samples_per_epoch)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        size = self.card["image_size"]
        return (self.card["in_channels"], size, size)


def load_prepared(folder: Path) -> Prepared:
    return Prepared(folder=folder, card=read_json(folder / CARD_FILE))


def build_model(params: Params, prepared: Prepared, pretrained: Path | None = None) -> nn.Module:
    """The model named in params, shaped for the prepared dataset (classes, channels)."""
    return create_model(params.model.name, num_classes=len(prepared.card["classes"]),
                        in_channels=prepared.card["in_channels"], pretrained=pretrained)


def fixed_bits(params: Params, table: CostTable) -> dict[str, LayerBits]:
    """First conv and last linear at the fixed precision of ``quant.first_last`` (SPEC §3.1)."""
    bits = LayerBits(params.quant.first_last.w_bits, params.quant.first_last.a_bits)
    return {table.first: bits, table.last: bits}


def load_supernet(params: Params, prepared: Prepared, pretrain_dir: Path, calibrate_dir: Path,
                  state: Path | None = None):
    """The supernet over the FP model with calibrated steps; trained weights and α from ``state``."""
    table = CostTable.from_dict(read_json(calibrate_dir / "cost_table.json"))
    calibration = Calibration.from_state_dict(load_state_dict(calibrate_dir / "calibration.pt"))
    model = build_model(params, prepared, pretrain_dir / "model.pt")
    supernet = Supernet(model, table, params.quant.w_bits, params.quant.a_bits, calibration,
                        fixed_bits(params, table))
    if state is not None:
        supernet.load_state_dict(load_state_dict(state))
    return supernet, table
