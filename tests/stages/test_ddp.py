"""Data-parallel training (issue 17): ``finetune`` and ``supernet`` run as 2 gloo processes on the CPU give the
weights of the 1-process run with the same global batch, only rank 0 writes outputs, and each stage makes one
MLflow run.

Tolerance: the 2-process run sums the loss, the gradients and the batch-norm statistics in another order
(per shard, then across processes): float32 rounding differences, which quantization-aware training amplifies
(a value that crosses a rounding boundary of the integer grid moves by a whole step, and the BN running
statistics follow). So the test measures that amplification with a control: the 1-process run started from
the pretrained weights moved by one float32 ulp. The 2-process run must differ from the 1-process run by at
most ``SLACK`` times the control's difference (max over every float tensor, running statistics included).
After one step the two agree to ~1e-8 (tests/test_distributed.py checks the loop itself tightly).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from smpq.artifacts import load_state_dict, save_state_dict
from smpq.config import load_params
from smpq.cost import CostTable
from smpq.policy import Policy, fixed_bits
from tests.stages.test_bad_inputs import params_dict, write_fashion_mnist

# torchrun launches of whole stages, 1 and 2 processes each: 84 s on 2 idle cores, in the default run
# (issue 17 asks for it there; the default run stays under 5 minutes with it).

ROOT = Path(__file__).resolve().parents[2]
SLACK, ATOL = 4.0, 1e-5
# Small enough for a 2-core test machine: 160 train images, global batches of 32 (last one 16: unequal shards
# are fine), two epochs; batch norm in training mode everywhere, so its synchronisation is exercised.
TINY = {
    "data": {"root": "data/raw", "allow_download": False, "train_size": 160, "search_val_size": 48, "test_size": 40},
    "pretrain": {"epochs": 1, "batch_size": 32, "samples_per_epoch": 96, "eval_batch_size": 64},
    "calibrate": {"batches": 1, "batch_size": 32},
    "supernet": {"epochs": 2, "batch_size": 32, "samples_per_epoch": 80, "warmup_epochs": 0, "single_path": 0.5,
                 "lr": 0.001, "alpha_lr": 0.001},
    "finetune": {"epochs": 2, "batch_size": 32, "samples_per_epoch": 112, "eval_batch_size": 64, "augment": True,
                 "lr": 0.001},
    "runtime": {"device": "cpu", "threads": 1},
}


def write_params(root: Path, name: str, processes: int) -> Path:
    data = params_dict(**TINY)
    data["runtime"]["processes"] = processes
    data["tracking"] = {**data["tracking"], "enabled": True, "uri": f"sqlite:///{root / name}.db", "required": True}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stage_args(root: Path, stage: str, out: str, pretrain: str = "data/pretrain") -> list[str]:
    common = ["--prepared", root / "data/prepared", "--pretrain", root / pretrain,
              "--calibrate", root / "data/calibrate"]
    extra = {"finetune": ["--method", "uniform", "--select", root / "data/select"], "supernet": []}[stage]
    return [str(a) for a in (*common, *extra, "--out", root / out / "data", "--results", root / out / "results")]


def run_in_process(stage: str, params: Path, args: list[str]) -> None:
    try:
        importlib.import_module(f"stages.{stage}").main(["--params", str(params), *args])
    except SystemExit as exit_:
        assert exit_.code == 0


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SMPQ_", "DVC_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
    return env


def run_checked(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Prepared splits, a pretrained model, a calibration and the uniform policy of a tiny project."""
    root = tmp_path_factory.mktemp("ddp")
    write_fashion_mnist(root / "data/raw", n_train=220, n_test=40)
    params = root / "setup.yaml"
    params.write_text(yaml.safe_dump({**params_dict(**TINY), "tracking": {**params_dict()["tracking"],
                                                                          "enabled": False}}, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for stage, args in (("prepare", ["--raw", "data/raw", "--out", "data/prepared"]),
                            ("pretrain", ["--prepared", "data/prepared", "--out", "data/pretrain",
                                          "--results", "results/pretrain"]),
                            ("calibrate", ["--prepared", "data/prepared", "--pretrain", "data/pretrain",
                                           "--out", "data/calibrate", "--results", "results/calibrate"])):
            run_in_process(stage, params, args)
    finally:
        os.chdir(cwd)
    table = CostTable.load(root / "data/calibrate")
    fixed = fixed_bits(load_params(params).quant.first_last, table)
    Policy.uniform(table.names, 8, 8, fixed).save(root / "data/select/uniform.yaml")
    state = load_state_dict(root / "data/pretrain/model.pt")  # the control: the start moved by one float32 ulp
    save_state_dict(root / "data/nudged/model.pt", {k: nudged(v) for k, v in state.items()})
    return root


def nudged(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with every float32 value moved to its next representable neighbour (away from zero)."""
    if not tensor.is_floating_point():
        return tensor
    return torch.nextafter(tensor, torch.where(tensor >= 0, torch.inf, -torch.inf))


def mlflow_runs(db: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId"))


def distance(one: Path, two: Path) -> float:
    """The largest difference between the float tensors of two checkpoints of one model."""
    a, b = load_state_dict(one), load_state_dict(two)
    assert list(a) == list(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def assert_same_weights(one: Path, two: Path, nudged_run: Path) -> None:
    """2 processes vs 1 is within ``SLACK`` × what one ulp of the start does to the 1-process run."""
    ddp, control = distance(one, two), distance(one, nudged_run)
    assert ddp <= SLACK * control + ATOL, (ddp, control)


def test_finetune_on_two_processes_matches_one(project):
    """torchrun with 2 gloo workers (each recording what it writes) against the same stage in one process."""
    run_in_process("finetune", write_params(project, "one", 1), stage_args(project, "finetune", "one"))
    logs = project / "ranks"
    logs.mkdir()
    run_checked([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 str(ROOT / "tests/stages/ddp_recorder.py"), "finetune", str(logs),
                 "--params", str(write_params(project, "two", 1)), *stage_args(project, "finetune", "two")], project)
    run_in_process("finetune", write_params(project, "nudged", 1),
                   stage_args(project, "finetune", "nudged", pretrain="data/nudged"))
    assert_same_weights(project / "one/data/model.pt", project / "two/data/model.pt",
                        project / "nudged/data/model.pt")
    written = {rank: json.loads((logs / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert written[1] == []
    assert {Path(p).name for p in written[0]} >= {"model.pt", "policy.yaml", "metrics.json", "history.json"}
    metrics = json.loads((project / "two/results/metrics.json").read_text())
    assert metrics["method"] == "uniform" and 0 <= metrics["top1"] <= 1  # the global test split's, from rank 0
    assert mlflow_runs(project / "two.db") == ["finetune@uniform"]


def test_supernet_on_two_processes_matches_one(project):
    """``runtime.processes: 2`` relaunches the stage under torchrun (as ``dvc repro`` would run it)."""
    run_in_process("supernet", write_params(project, "sn_one", 1), stage_args(project, "supernet", "sn_one"))
    run_checked([sys.executable, "-m", "stages.supernet", "--params", str(write_params(project, "sn_two", 2)),
                 *stage_args(project, "supernet", "sn_two")], project)
    run_in_process("supernet", write_params(project, "sn_nudged", 1),
                   stage_args(project, "supernet", "sn_nudged", pretrain="data/nudged"))
    assert_same_weights(project / "sn_one/data/supernet.pt", project / "sn_two/data/supernet.pt",
                        project / "sn_nudged/data/supernet.pt")
    alpha = [json.loads((project / f"{n}/data/alpha.json").read_text()) for n in ("sn_one", "sn_two")]
    assert alpha[0].keys() == alpha[1].keys()
    assert mlflow_runs(project / "sn_two.db") == ["supernet"]
    assert sorted(p.name for p in (project / "sn_two/data").iterdir()) == ["alpha.json", "dmpq_argmax.yaml",
                                                                         "supernet.pt"]
