"""The ``export@<method>`` stage in-process on a tiny synthetic Fashion-MNIST and a hand-made fine-tune output:
it writes both files and results that agree with the cost model, and a policy it cannot express ends in one
``error:`` line with nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from smpq.artifacts import save_state_dict
from smpq.config import load_params
from smpq.cost import cost_table, size_bytes
from smpq.policy import Policy, fixed_bits
from smpq.quant import apply_policy, calibrate
from stages.inputs import build_model, load_prepared
from tests.stages.test_bad_inputs import Project, one_error_line, prepared_project


@pytest.fixture
def project(tmp_path, monkeypatch, capsys) -> Project:
    proj = prepared_project(tmp_path, monkeypatch, capsys)
    params = load_params(proj.params)
    prepared = load_prepared(tmp_path / "data/prepared")
    torch.manual_seed(0)
    model = build_model(params, prepared).eval()
    table = cost_table(model, prepared.input_shape)
    table.save(tmp_path / "data/calibrate")
    images = next(iter(prepared.loader("train", batch_size=16, seed=0)))[0]
    calibrate(model, table.names, [images], [3, 4, 8, 16], [3, 4, 8]).save(tmp_path / "data/calibrate/calibration.pt")
    proj.table, proj.fixed = table, fixed_bits(params.quant.first_last, table)
    return proj


def finetuned(project: Project, method: str, w_bits: int) -> None:
    """A 'fine-tuned' checkpoint: the float model at W{w_bits}A4 (first/last W8A8) with calibrated steps."""
    from smpq.quant import Calibration

    params, root = load_params(project.params), project.root
    policy = Policy.uniform(project.table.names, w_bits, 4, project.fixed)
    calibration = Calibration.load(root / "data/calibrate/calibration.pt")
    model = apply_policy(build_model(params, load_prepared(root / "data/prepared")), policy, calibration)
    save_state_dict(root / f"data/finetune/{method}/model.pt", model.state_dict())
    policy.save(root / f"data/finetune/{method}/policy.yaml")


def run_export(project: Project, method: str) -> tuple[int, str]:
    from stages.export import main

    r = project.root
    argv = ["--params", str(project.params), "--method", method, "--prepared", str(r / "data/prepared"),
            "--calibrate", str(r / "data/calibrate"), "--finetune", str(r / f"data/finetune/{method}"),
            "--out", str(r / f"data/export/{method}"), "--results", str(r / f"results/export/{method}")]
    try:
        main(argv)
        return 0, project.capsys.readouterr().err
    except SystemExit as exit_:
        return exit_.code, project.capsys.readouterr().err


def test_stage_writes_onnx_packed_weights_and_results(project):
    finetuned(project, "w3", 3)
    code, err = run_export(project, "w3")
    assert code == 0, err
    root = project.root
    assert sorted(p.name for p in (root / "data/export/w3").iterdir()) == ["model.onnx", "weights.smpq"]
    metrics = json.loads((root / "results/export/w3/metrics.json").read_text())
    policy = Policy.load(root / "data/finetune/w3/policy.yaml")
    assert metrics["packed_mb"] * 1e6 == pytest.approx(size_bytes(project.table, policy), abs=0.5)
    assert metrics["onnx_mb"] * 1e6 == (root / "data/export/w3/model.onnx").stat().st_size
    assert metrics["top1_agreement"] >= 0.999 and metrics["policy"] == "W3A4"
    size = json.loads((root / "results/export/w3/size_report.json").read_text())
    assert [row["layer"] for row in size["layers"]] == project.table.names
    checks = json.loads((root / "results/export/w3/checks.json").read_text())
    assert checks["unpacked"]["equal"] and checks["onnx"]["images"] == 10 and checks["opset"] == 13


def test_a_policy_onnx_cannot_express_fails_in_one_line(project):
    finetuned(project, "w16", 16)
    code, err = run_export(project, "w16")
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("error: stage 'export@w16' failed: layer 'blocks.0.conv1': 16-bit weights cannot be "
                           "expressed in ONNX opset 13 QDQ")
    assert not (project.root / "data/export/w16").exists() and not (project.root / "results/export").exists()
