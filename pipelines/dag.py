"""What the flows read from DVC: the stage list in dependency order, a stage's command and metrics, and the
``dvc`` commands the flows run (``repro --single-item``, ``status``, ``commit``). ``dvc.yaml`` is the one
place stages and paths are defined; nothing here repeats them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


class StageFailed(RuntimeError):
    """A DVC stage (or a DVC command run for it) exited with a non-zero status."""


def stage_order(project: Path, target: str | None = None) -> list[str]:
    """Stage names (``finetune@uniform`` for foreach items) so that every stage follows its deps; with
    ``target``, only that stage and the stages it depends on."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        if target is not None:
            stage = _stage(repo, project, target)
            graph = graph.subgraph({stage, *nx.descendants(graph, stage)})
        names = {stage: stage.name for stage in graph.nodes}
        order = nx.lexicographical_topological_sort(graph.reverse(), key=lambda stage: names[stage])
        return [names[stage] for stage in order]


def _stage(repo, project: Path, stage_name: str):
    for stage in repo.index.stages:
        if stage.name == stage_name:
            return stage
    raise KeyError(f"no stage {stage_name!r} in {project / 'dvc.yaml'}")


def metrics_files(project: Path, stage_name: str) -> list[Path]:
    """The metrics files that ``dvc.yaml`` declares for ``stage_name``."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return [project / out.def_path for out in _stage(repo, project, stage_name).metrics]


def stage_outputs(project: Path, stage_name: str) -> list[Path]:
    """Every output (``outs``, ``metrics``, ``plots``) that ``dvc.yaml`` declares for ``stage_name``."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return [project / out.def_path for out in _stage(repo, project, stage_name).outs]


def all_outputs(project: Path) -> list[Path]:
    """Every output (``outs``, ``metrics``, ``plots``) that ``dvc.yaml`` declares, of all stages."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return [project / out.def_path for stage in repo.index.stages for out in stage.outs]


def stage_command(project: Path, stage_name: str) -> str:
    """The command of ``stage_name`` as ``dvc.yaml`` gives it (templates resolved)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return _stage(repo, project, stage_name).cmd


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``project`` (the venv's ``dvc`` next to this Python when it is not on PATH)."""
    exe = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    return subprocess.run([exe, *args], cwd=project, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True)


def stage_changed(project: Path, stage_name: str) -> bool:
    """Whether ``dvc repro`` would run ``stage_name`` (changed deps, params, outputs, or never run)."""
    proc = dvc(project, "status", "--json", stage_name)
    if proc.returncode != 0:
        raise StageFailed(f"dvc status {stage_name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return bool(json.loads(proc.stdout[proc.stdout.index("{"):]))


def commit_stage(project: Path, stage_name: str) -> None:
    """Record the stage's current deps, params and outputs in ``dvc.lock`` (as ``dvc repro`` would have)."""
    proc = dvc(project, "commit", "--force", stage_name)
    if proc.returncode != 0:
        raise StageFailed(f"dvc commit {stage_name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
