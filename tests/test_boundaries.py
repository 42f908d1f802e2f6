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


def imported_modules(path: Path, *, with_names: bool = False) -> set[str]:
    """Every module a file imports by absolute name (``import a.b``, ``from a.b import c``); ``with_names``
    adds ``a.b.c`` for each imported name (it may be a submodule)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            if with_names:
                modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def python_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


@pytest.mark.parametrize("path", python_files("smpq"), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_no_orchestration(path):
    assert not imported_roots(path) & ORCHESTRATION


@pytest.mark.parametrize("path", python_files("pipelines"), ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_only_orchestrate(path):
    """Flows import orchestration, ``smpq.config`` (the validated params) and the stages' entry points only."""
    modules = imported_modules(path)
    assert not {m for m in modules if m.split(".")[0] in ML} - {"smpq.config", "smpq.errors"}


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


def test_production_files_stay_small():
    """One job per file: no production module over 300 lines; the Shapley stage's two modules ≤ 150 each."""
    files = [p for folder in ("smpq", "stages", "pipelines", "bench") for p in python_files(folder)]
    too_long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 300}
    assert not too_long
    assert all(len((ROOT / f"stages/{m}.py").read_text().splitlines()) <= 150 for m in ("shapley", "shapley_worker"))


def local_imports(path: Path) -> set[str]:
    """Modules of this project (``smpq.*``, ``stages.*``) that a file imports, at any depth in the file."""
    return {n for n in imported_modules(path, with_names=True) if n.split(".")[0] in {"smpq", "stages"}}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None  # ``from pkg import name`` where name is not a module


def code_closure(module: str) -> set[Path]:
    """Every project file the module runs when imported: its local imports, their packages' __init__, and on."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for file in filter(None, (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))):
            if file not in seen:
                seen.add(file)
                todo += local_imports(file)
    return seen


def dvc_stage_commands() -> dict[str, tuple[str, list[str]]]:
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: ((s.get("do") or s)["cmd"], (s.get("do") or s).get("deps", [])) for name, s in stages.items()}


@pytest.mark.parametrize("stage", sorted(dvc_stage_commands()))
def test_dvc_deps_cover_the_code_each_stage_runs(stage):
    """A change to any project file a stage imports must make ``dvc repro`` rerun that stage."""
    cmd, deps = dvc_stage_commands()[stage]
    module = cmd.split("python -m ", 1)[1].split()[0]
    dep_paths = [ROOT / d for d in deps if "${" not in d]
    uncovered = {str(f.relative_to(ROOT)) for f in code_closure(module)
                 if not any(f == d or d in f.parents for d in dep_paths)}
    assert not uncovered, f"{stage}: add to its deps in dvc.yaml: {sorted(uncovered)}"


@pytest.mark.parametrize("stage", ["pretrain", "calibrate"])
def test_a_supernet_edit_leaves_pretrain_and_calibrate_unchanged(stage):
    """Neither runs nor declares ``smpq/supernet``, so ``dvc status`` calls them unchanged after an edit there."""
    supernet = ROOT / "smpq" / "supernet"
    cmd, deps = dvc_stage_commands()[stage]
    module = cmd.split("python -m ", 1)[1].split()[0]
    assert not {f for f in code_closure(module) if supernet in f.parents}
    assert not [d for d in deps if ROOT / d == supernet or supernet in (ROOT / d).parents]
