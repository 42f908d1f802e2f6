"""A tiny copy of the project in a temporary git + DVC repository, for end-to-end runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY = {
    "data": {"train_size": 3000, "search_val_size": 500, "test_size": 1000},
    "pretrain": {"epochs": 2, "lr": 0.05},
    "calibrate": {"batches": 2, "batch_size": 64},
    "supernet": {"epochs": 1, "samples_per_epoch": 512},
    "shapley": {"batch_size": 256, "max_permutations": 4},
    "hawq": {"probes": 3, "batch_size": 128},
    "finetune": {"epochs": 1, "samples_per_epoch": 512},
}


def tiny_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SMPQ_", "PREFECT_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               MLFLOW_DISABLE_TELEMETRY="true", PREFECT_HOME=str(project / ".prefect"), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


def run(cmd: list[str], project: Path, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=project, env=tiny_env(project), capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def make_project(dest: Path) -> Path:
    """Copy code, dvc.yaml and params.yaml (shrunk by ``TINY``) into ``dest`` as a fresh git+DVC repo."""
    for folder in ("smpq", "stages", "pipelines"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text("/data/\n/mlflow.db\n/mlruns/\n/.prefect/\n__pycache__/\n/results/timings/\n")
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny project"], dest)
    return dest


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Path:
    """The tiny project after one full ``dvc repro``."""
    project = make_project(tmp_path_factory.mktemp("dvc_project"))
    run(["dvc", "repro"], project, timeout=900)
    return project
