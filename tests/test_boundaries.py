"""The layers stay apart: the library imports no orchestration, flows hold no ML, stages stay thin."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = {"dvc", "prefect", "prefect_dask", "mlflow"}
ML = {"torch", "torchvision", "numpy", "scipy", "smpq"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def python_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


@pytest.mark.parametrize("path", python_files("smpq"), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_no_orchestration(path):
    assert not imported_roots(path) & ORCHESTRATION


@pytest.mark.parametrize("path", python_files("pipelines"), ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_only_orchestrate(path):
    assert not imported_roots(path) & ML


STAGE_MODULES = [p for p in python_files("stages") if "def main(" in p.read_text()]


@pytest.mark.parametrize("path", STAGE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_stages_are_thin(path):
    assert len(path.read_text().splitlines()) <= 120
    assert not imported_roots(path) & {"prefect", "dvc"}


def test_every_stage_module_is_in_dvc_yaml():
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    assert STAGE_MODULES
    for path in STAGE_MODULES:
        assert f"python -m stages.{path.stem} " in dvc_yaml


def test_library_files_stay_small():
    too_long = {str(p.relative_to(ROOT)): n for p in python_files("smpq")
                if (n := len(p.read_text().splitlines())) > 350}
    assert not too_long
