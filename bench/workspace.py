"""Benchmark workspaces: scratch copies of the project in which ``dvc repro`` runs the stages with other params.

A benchmark never writes the project's own outputs. ``make_copy`` copies the project's files (what git
lists, without ``dvc.lock`` and the stage outputs) into a scratch folder as a fresh git repository and
writes its ``params.yaml`` with dotted overrides, validated first by ``smpq.config.load_params`` (a typo is
a ``ConfigError`` naming the key). ``repro`` runs stages there with ``dvc repro --single-item``; stage order,
commands and paths all come from ``dvc.yaml`` (``pipelines.dag``). ``reuse_outputs`` seeds a copy with an
earlier copy's outputs and ``dvc.lock``, so DVC reruns only the stages whose params or code changed.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.dag import all_outputs, metrics_files, stage_order, stage_outputs
from smpq.config import Params, as_flat_dict, load_params

log = logging.getLogger("bench.workspace")

PROJECT = Path(__file__).resolve().parents[1]
SCRATCH = Path("/tmp/smpq_bench")
MARKER = ".bench_copy"  # a folder holding this file is a scratch copy that make_copy may replace

# A configuration small enough for the tests (seconds, not minutes); the same shape as the default.
TINY: dict[str, Any] = {
    "data.train_size": 1000, "data.search_val_size": 256, "data.test_size": 500,
    "pretrain.epochs": 1, "pretrain.lr": 0.05, "calibrate.batches": 2, "calibrate.batch_size": 64,
    "calibrate.max_activation_samples": 1000,
    "supernet.epochs": 1, "supernet.samples_per_epoch": 256,
    "shapley.batch_size": 64, "shapley.max_permutations": 2, "hawq.probes": 2, "hawq.batch_size": 64,
    "finetune.epochs": 1, "finetune.samples_per_epoch": 256,
}


def default_params(overrides: Mapping[str, Any] | None = None) -> Params:
    """The project's ``params.yaml`` with dotted ``overrides`` (``{"seed": 1}``), validated by ``load_params``."""
    return load_params(PROJECT / "params.yaml", overrides)


def override(params: Params, values: Mapping[str, Any]) -> Params:
    """``params`` with dotted keys replaced, validated again as a whole by ``load_params``."""
    return default_params(as_flat_dict(params) | dict(values))


@dataclass(frozen=True)
class Workspace:
    """A project folder (the project itself or a scratch copy); its stage outputs lie where ``dvc.yaml`` says."""

    root: Path

    def data(self, stage: str) -> Path:
        """The first output ``dvc.yaml`` declares for ``stage`` (its data folder)."""
        return stage_outputs(self.root, stage)[0]

    def metrics(self, stage: str) -> Path:
        """The first metrics file ``dvc.yaml`` declares for ``stage``."""
        return metrics_files(self.root, stage)[0]

    def result(self, stage: str, name: str = "metrics.json") -> Path:
        """The output file called ``name`` that ``dvc.yaml`` declares for ``stage`` (a metric or a plain out)."""
        return next(p for p in stage_outputs(self.root, stage) if p.name == name)

    def missing(self) -> list[Path]:
        """Absent outputs of the stages the ``shapley`` stage depends on (its game cannot be built without)."""
        if not (self.root / "dvc.yaml").is_file():
            return [self.root / "dvc.yaml"]
        return [path for path in map(self.data, stage_order(self.root, "shapley")[:-1]) if not path.exists()]


def project_workspace() -> Workspace:
    """The project's own folders: read them, never write."""
    return Workspace(PROJECT)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def clean_env(project: Path, threads: int | None = None) -> dict[str, str]:
    """The environment for a copy: no tracking or pipeline variables that could point at the real project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SMPQ_", "PREFECT_", "DVC_"))}
    env |= {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_HOME": str(project / ".prefect"),
            "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return env | ({"OMP_NUM_THREADS": str(threads)} if threads else {})


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    """Run ``cmd``; (stdout, seconds). A failure raises with the tail of its output."""
    proc, seconds = timed(subprocess.run, cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout, seconds


def project_files() -> list[str]:
    """The project's files as git sees them (tracked, and new ones not ignored) except ``dvc.lock`` and the
    stage outputs: a copy starts with no stage run."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    outputs = [path.relative_to(PROJECT) for path in all_outputs(PROJECT)]
    return [name for name in listed if name and name != "dvc.lock" and (PROJECT / name).is_file()
            and not any(Path(name).is_relative_to(out) for out in outputs)]


def make_copy(dest: Path, overrides: Mapping[str, Any] | None = None) -> Workspace:
    """The project in ``dest`` as a fresh git repository, its ``params.yaml`` with dotted ``overrides``."""
    default_params(overrides)  # a bad key or value stops here, before anything is copied
    _clear(dest)
    for name in project_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, dest / name)
    (dest / MARKER).write_text("a scratch copy of the project made by bench.workspace\n")
    ws = Workspace(dest)
    write_params(ws, overrides or {})
    env = clean_env(dest)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench copy"]):
        sh(cmd, dest, env)
    return ws


def _clear(dest: Path) -> None:
    """Make room for a copy: an earlier copy is removed, any other non-empty folder is refused."""
    if (dest / MARKER).is_file():
        shutil.rmtree(dest)
    elif dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: not empty and not a benchmark copy; give another output folder")
    dest.mkdir(parents=True, exist_ok=True)


def write_params(ws: Workspace, overrides: Mapping[str, Any]) -> Params:
    """``ws``'s ``params.yaml`` with dotted ``overrides``, once ``load_params`` accepts them. A copy reads its own
    file (``make_copy`` made it from the project's), so editing the project's params.yaml, e.g. a new key from
    a merge, cannot break a benchmark that is still running on the code it started with."""
    path = ws.root / "params.yaml"
    params = load_params(path, overrides)
    data = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        functools.reduce(lambda node, name: node.setdefault(name, {}), sections, data)[key] = value
    (ws.root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return params


def repro(ws: Workspace, stages: list[str], threads: int | None = None) -> dict[str, float]:
    """``dvc repro --single-item`` of each stage in turn; the seconds of those that ran (DVC skips the rest)."""
    env = clean_env(ws.root, threads)
    seconds = {}
    for i, stage in enumerate(stages, 1):
        out, took = sh(["dvc", "repro", "--single-item", stage], ws.root, env)
        ran = f"Running stage '{stage}'" in out
        if ran:
            seconds[stage] = took
        log.info("%s: stage %d/%d %s %s", ws.root.name, i, len(stages), stage,
                 f"ran in {took:.0f} s" if ran else "up to date")  # progress of a long benchmark (issue 14)
    return seconds


def reuse_outputs(source: Workspace, ws: Workspace) -> None:
    """Seed ``ws`` with the stage outputs, ``dvc.lock`` and DVC cache of ``source``, an earlier copy."""
    if not (source.root / "dvc.lock").is_file():
        raise FileNotFoundError(f"{source.root}: nothing to reuse (no dvc.lock); run the benchmark without reuse "
                                "first")
    for path in [*all_outputs(source.root), source.root / ".dvc/cache", source.root / "dvc.lock"]:
        target = ws.root / path.relative_to(source.root)
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        elif path.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def load_game(params: Params, ws: Workspace, batch_size: int | None = None):
    """``(value_fn, players)``: the trained supernet of ``ws`` as the ``shapley`` stage's coalition game (SPEC
    §3.3), on the paths its command in ``dvc.yaml`` gives."""
    from pipelines.dag import stage_command
    from stages.shapley_worker import STAGE, build_game, stage_inputs

    if batch_size is not None:
        params = override(params, {"shapley.batch_size": batch_size})
    g = build_game(params, stage_inputs(stage_command(ws.root, STAGE), ws.root)[1])
    return g.value_fn, g.players


def set_threads(count: int) -> None:
    """Benchmarks share a 2-core machine: pin torch's intra-op threads (2 for benches, 1 in tests)."""
    import torch

    torch.set_num_threads(count)
