"""The stage list, read from ``dvc.yaml`` (the one place it is defined) in dependency order."""

from __future__ import annotations

from pathlib import Path


def stage_order(project: Path) -> list[str]:
    """Stage names (``finetune@uniform`` for foreach items) so that every stage follows its deps."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        names = {stage: stage.name for stage in graph.nodes}
        order = nx.lexicographical_topological_sort(graph.reverse(), key=lambda stage: names[stage])
        return [names[stage] for stage in order]


def metrics_files(project: Path, stage_name: str) -> list[Path]:
    """The metrics files that ``dvc.yaml`` declares for ``stage_name``."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        for stage in repo.index.stages:
            if stage.name == stage_name:
                return [project / out.def_path for out in stage.metrics]
    raise KeyError(f"no stage {stage_name!r} in {project / 'dvc.yaml'}")
