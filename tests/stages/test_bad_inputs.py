"""The bad-input catalogue (issue 13): every bad input a hostile user or an unlucky operator gave ends in exit
status 1 and exactly one ``error:`` line naming the key path or file and the fix, with no traceback, and leaves
the previous outputs byte-identical (and no temporary file). Valid inputs that used to crash now succeed.

Stages run in-process (``stages.<name>.main``) on a tiny synthetic Fashion-MNIST; the kill -9 and real
file-size-limit cases run the stage as a subprocess and are ``slow``.
"""

from __future__ import annotations

import errno
import gzip
import importlib
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "data": {"root": "data/raw", "allow_download": False, "train_size": 40, "search_val_size": 10, "test_size": 10},
    "pretrain": {"epochs": 1, "batch_size": 8, "samples_per_epoch": 32, "eval_batch_size": 64},
    "tracking": {"enabled": False},
}


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def write_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def params_dict(**changes) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in {**TINY, **changes}.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return data


class Project:
    """A tiny project folder: raw data, params, and the outputs of a first good ``prepare`` run."""

    def __init__(self, root: Path):
        self.root = root
        self.params = root / "params.yaml"
        write_fashion_mnist(root / "data" / "raw")
        self.write_params()

    def write_params(self, text: str | None = None, **changes) -> None:
        self.params.write_text(text if text is not None else yaml.safe_dump(params_dict(**changes), sort_keys=False))

    def args(self, stage: str) -> list[str]:
        r = self.root
        return {
            "prepare": ["--raw", r / "data/raw", "--out", r / "data/prepared"],
            "pretrain": ["--prepared", r / "data/prepared", "--out", r / "data/pretrain", "--results",
                         r / "results/pretrain"],
            "select": ["--calibrate", r / "data/calibrate", "--supernet", r / "data/supernet", "--shapley",
                       r / "data/shapley", "--sensitivity", r / "data/sensitivity", "--out", r / "data/select",
                       "--results", r / "results/select"],
        }[stage]

    def run(self, stage: str, *extra: str) -> tuple[int, str]:
        """Run ``stages.<stage>`` in-process; (exit status, stderr)."""
        main = importlib.import_module(f"stages.{stage}").main
        argv = ["--params", str(self.params), *map(str, self.args(stage)), *extra]
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        return code, self.capsys.readouterr().err

    def snapshot(self) -> dict[str, bytes]:
        """Every file under data/ and results/ (names included: a stray temporary file shows up)."""
        return {str(p.relative_to(self.root)): p.read_bytes() for folder in ("data", "results")
                for p in sorted((self.root / folder).rglob("*")) if p.is_file()}


def prepared_project(tmp_path, monkeypatch, capsys) -> Project:
    """A tiny project in ``tmp_path`` (the working folder) whose ``prepare`` stage has run."""
    monkeypatch.chdir(tmp_path)
    proj = Project(tmp_path)
    proj.capsys = capsys
    code, err = proj.run("prepare")
    assert code == 0, err
    return proj


@pytest.fixture
def project(tmp_path, monkeypatch, capsys) -> Project:
    proj = prepared_project(tmp_path, monkeypatch, capsys)
    for name, content in {"data/pretrain/model.pt": b"previous model", "results/pretrain/metrics.json": b"{}",
                          "data/select/smpq.yaml": b"previous: policy\n"}.items():  # earlier outputs to keep
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    return proj


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line of a failed stage; no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def assert_fails_cleanly(project: Project, stage: str, *expected: str, extra: tuple[str, ...] = ()) -> str:
    before = project.snapshot()
    code, stderr = project.run(stage, *extra)
    assert code == 1, stderr
    line = one_error_line(stderr)
    assert line.startswith(f"error: stage '{stage}' failed: ")
    for fragment in expected:
        assert fragment.format(root=project.root) in line, line
    assert project.snapshot() == before
    return line


# ---- bad params: one case per finding, checked at load time by every stage ------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_PARAMS = {
    "lr_nan": ({"pretrain": {"lr": NAN}}, "params.yaml: pretrain.lr: nan is not allowed; give a finite number"),
    "lr_inf": ({"pretrain": {"lr": INF}}, "pretrain.lr: inf is not allowed; give a finite number"),
    "truncation_nan": ({"shapley": {"truncation": NAN}}, "shapley.truncation: nan is not allowed; give a finite"),
    "gbitops_inf": ({"select": {"budget": {"gbitops": INF}}}, "select.budget.gbitops: inf is not allowed"),
    "gbitops_nan": ({"select": {"budget": {"gbitops": NAN}}}, "select.budget.gbitops: nan is not allowed"),
    "gbitops_huge": ({"select": {"budget": {"gbitops": 1e30}}},
                     "select.budget.gbitops: 1e+30 out of range; allowed: [0.0, 1000000000.0]"),
    "unknown_model": ({"model": {"name": "resnet50"}},
                      "model.name: 'resnet50' is not allowed; allowed: compact_resnet, mobilenet_v2, resnet18, "
                      "resnet20"),
    "tracking_timeout": ({"tracking": {"timeout_s": 0}}, "tracking.timeout_s: 0 out of range; allowed: [1, 120]"),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_bad_params_fail_with_the_key_path(project, case):
    changes, message = BAD_PARAMS[case]
    project.write_params(**changes)
    assert_fails_cleanly(project, "prepare", message)


def test_a_duplicate_key_names_the_key_and_its_line(project):
    text = project.params.read_text().replace("shapley:\n", "shapley:\n  max_permutations: 4\n", 1)
    lines = text.splitlines()
    first = lines.index("  max_permutations: 4") + 1
    second = next(i for i, ln in enumerate(lines, 1) if i > first and ln.startswith("  max_permutations:"))
    project.write_params(text)
    assert_fails_cleanly(project, "prepare", f"params.yaml: line {second}: duplicate key 'max_permutations' "
                         f"(first set on line {first}); keep only one of them")


def test_malformed_yaml_is_one_line_with_line_and_column(project):
    project.write_params("seed: 0\ndata: {dataset: fashion_mnist\nmodel: x\n")
    assert_fails_cleanly(project, "prepare", "{root}/params.yaml:3:", "not valid YAML (", "fix the syntax there")


# ---- bad files -------------------------------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize(("content", "expected"), [
    (lambda: os.urandom(4096).replace(b"\x80", b"\x00"),
     "not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
    (lambda: b"", "empty file, not a checkpoint"),
    (lambda: pickle.dumps({"fc.weight": _Payload()}, protocol=2),
     "not a plain tensor checkpoint (it needs the Python object posix.system to load); do not load it with "
     "pickle, which can run code hidden in the file"),
], ids=["random_bytes", "empty", "pickle_payload"])
def test_a_bad_pretrained_checkpoint_is_one_line_and_never_unpickled(project, content, expected):
    bad = project.root / "weights.pt"
    bad.write_bytes(content())
    project.write_params(model={"name": "compact_resnet", "pretrained": str(bad)})
    line = assert_fails_cleanly(project, "pretrain", f"{bad}: {expected}")
    assert "weights_only" not in line and not (project.root / "PWNED").exists()


def test_a_corrupt_raw_file_keeps_the_previous_splits(project):
    raw = project.root / "data/raw/train-images-idx3-ubyte.gz"
    raw.write_bytes(raw.read_bytes()[:200])
    assert_fails_cleanly(project, "prepare", "train-images-idx3-ubyte.gz")


def test_prepare_replaces_nothing_when_the_card_cannot_be_built(project, monkeypatch):
    """The card is built before any split is written (it used to be written after them)."""
    from smpq.errors import DataError

    def broken_card(*args, **kwargs):
        raise DataError("data/raw/train/x.png: cannot decode the image; replace or remove the file")

    monkeypatch.setattr("stages.prepare.dataset_card", broken_card)
    assert_fails_cleanly(project, "prepare", "x.png: cannot decode the image")


def test_prepare_swaps_the_whole_set_in_or_nothing(project, monkeypatch):
    """A failure while writing the third file leaves the old set, not two new splits beside the old ones."""
    import stages.prepare

    written = []
    real = stages.prepare.save_image_set

    def fail_on_third(path, images):
        written.append(path)
        if len(written) == 3:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, images)

    monkeypatch.setattr(stages.prepare, "save_image_set", fail_on_third)
    assert_fails_cleanly(project, "prepare", "{root}/data/prepared: Input/output error")


def select_inputs(root: Path) -> None:
    """Calibrate, supernet, shapley and sensitivity outputs for a 3-layer model whose middle layer is searched."""
    from smpq.artifacts import write_json, write_yaml
    from smpq.cost import CostTable, LayerCost

    CostTable(layers=(LayerCost("stem", "conv", 1000, 100, 8), LayerCost("b1", "conv", 50000, 600, 16),
                      LayerCost("fc", "linear", 640, 640, 10)), input_shape=(1, 8, 8)).save(root / "data/calibrate")
    bits = [4, 8]
    write_json(root / "data/shapley/shapley.json", {"players": [
        {"layer": "b1", "kind": kind, "bits": b, "value": 0.1 * b} for kind in "wa" for b in bits]})
    write_json(root / "data/sensitivity/sensitivity.json", {"candidates": [
        {"layer": "b1", "kind": kind, "bits": b, "omega": 1.0 / b} for kind in "wa" for b in bits]})
    group = {"bits": bits, "probabilities": [0.5, 0.5]}
    write_json(root / "data/supernet/alpha.json", {"b1": {"w": group, "a": group}})
    write_yaml(root / "data/supernet/dmpq_argmax.yaml",
               {name: {"w_bits": 8, "a_bits": 8} for name in ("stem", "b1", "fc")})


@pytest.mark.parametrize(("budget", "expected"), [
    ({"avg_bits": 3}, "select.budget.avg_bits: 3 is infeasible (the smallest feasible budget is "),
    ({"gbitops": 1e-6}, "select.budget.gbitops: 1e-06 is infeasible (the smallest feasible budget is "),
    ({"avg_bits": 8, "size_mb": 1e-5}, "select.budget.size_mb: 1e-05 is infeasible (the smallest model is "),
], ids=["avg_bits", "gbitops", "size_mb"])
def test_an_infeasible_budget_names_the_key_and_the_minimum_in_the_users_unit(project, budget, expected):
    select_inputs(project.root)
    project.write_params(quant={"w_bits": [4, 8], "a_bits": [4, 8], "first_last": {"w_bits": 8, "a_bits": 8}},
                         select={"budget": budget})
    line = assert_fails_cleanly(project, "select", expected)
    key = next(k for k in ("size_mb", "gbitops", "avg_bits") if k in budget)
    assert f"the smallest feasible {key} is " in line and line.endswith(f"set select.budget.{key} to at least that")
    if key == "avg_bits":
        assert "the smallest feasible avg_bits is 4:" in line  # the searched layer at W4A4


# ---- the file system refuses -------------------------------------------------------------------------------------

def test_a_read_only_output_folder(project, monkeypatch):
    """Simulated (the tests run as root, for whom chmod does not bite): creating the temporary folder fails."""
    import smpq.artifacts

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(smpq.artifacts.tempfile, "mkdtemp", refuse)
    assert_fails_cleanly(project, "prepare", "{root}/data: permission denied; make the folder writable (chmod u+w)")


def test_an_output_path_under_a_regular_file(project):
    out = project.root / "data/prepared/card.json/sub/prepared"
    before = project.snapshot()
    code, stderr = project.run("prepare", "--out", str(out))
    assert code == 1
    line = one_error_line(stderr)
    assert line.endswith("card.json/sub: a part of the path is a file, not a folder; move that file away or "
                         "choose another path")
    assert project.snapshot() == before


def test_disk_full_while_writing_keeps_the_previous_outputs(project, monkeypatch):
    """Simulated ENOSPC half-way through a write (the file system fills up)."""
    real = Path.write_bytes

    def fill_up(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", fill_up)
    assert_fails_cleanly(project, "prepare", "{root}/data/prepared: no space left on the device; free space")


@pytest.mark.slow
def test_a_file_size_limit_keeps_the_previous_outputs(project):
    """A real EFBIG: the stage runs under ``ulimit -f`` smaller than its split files."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    before = project.snapshot()
    proc = subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(project.params),
                           *map(str, project.args("prepare"))], cwd=project.root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=limit, timeout=300)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert line == (f"error: stage 'prepare' failed: {project.root}/data/prepared: file too large for this file "
                    "system or the file-size limit (ulimit -f); raise it and rerun")
    assert project.snapshot() == before


# ---- tracking ------------------------------------------------------------------------------------------------------

def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    project.write_params(tracking={"enabled": True})
    start = time.monotonic()
    assert_fails_cleanly(project, "prepare", "tracking store http://127.0.0.1:9 cannot be used (",
                         "or set tracking.required: false to run untracked")
    assert time.monotonic() - start < 30


def test_an_unreachable_tracking_server_only_warns_when_not_required(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    project.write_params(tracking={"enabled": True, "required": False})
    before = project.snapshot()
    code, stderr = project.run("prepare")
    assert code == 0, stderr
    assert project.snapshot() == before  # prepare is deterministic: the same bytes again


def test_a_corrupt_tracking_database(project):
    db = project.root / "mlflow.db"
    db.write_bytes(b"not a database" * 300)
    project.write_params(tracking={"enabled": True})
    assert_fails_cleanly(project, "prepare", f"tracking store sqlite:///{db} cannot be used (",
                         f"move the damaged database aside (mv {db} <name>.bad")
    assert db.read_bytes() == b"not a database" * 300


# ---- valid inputs that used to crash ---------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_a_short_valid_run_succeeds(project, schedule):
    """4 steps of one-cycle used to end in ZeroDivisionError inside OneCycleLR."""
    project.write_params(pretrain={**TINY["pretrain"], "schedule": schedule})
    code, stderr = project.run("pretrain")
    assert code == 0, stderr
    assert (project.root / "data/pretrain/model.pt").read_bytes() != b"previous model"


# ---- killed stages -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_of_a_running_stage_keeps_outputs_and_the_next_run_marks_its_run_failed(project):
    from mlflow.tracking import MlflowClient

    project.write_params(tracking={"enabled": True}, pretrain={**TINY["pretrain"], "epochs": 10000})
    before = project.snapshot()
    proc = subprocess.Popen([sys.executable, "-m", "stages.pretrain", "--params", str(project.params),
                             *map(str, project.args("pretrain"))], cwd=project.root, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    client = MlflowClient(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}")
    deadline, runs = time.monotonic() + 120, []
    while not runs and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
        if (project.root / "mlflow.db").exists():
            experiment = client.get_experiment_by_name("smpq")
            runs = experiment and client.search_runs([experiment.experiment_id], "tags.`smpq.stage` = 'pretrain'")
    assert runs and runs[0].info.status == "RUNNING", "the stage never opened its run"
    time.sleep(2)  # well inside training
    proc.kill()
    proc.wait()
    assert project.snapshot() == before  # no half-written output, no temp file
    project.write_params(tracking={"enabled": True})
    code, stderr = project.run("pretrain")
    assert code == 0, stderr
    killed = client.get_run(runs[0].info.run_id)
    assert killed.info.status == "FAILED"
    assert killed.data.tags["smpq.end_reason"].startswith(f"stale: process {proc.pid} on ")
