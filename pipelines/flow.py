"""Prefect flow: run the DVC stages in DAG order and return the final metrics.

Each stage runs as ``dvc repro --single-item <stage>`` (so ``dvc.lock`` stays consistent, unchanged stages
are skipped, and the outputs are exactly those of ``dvc repro``), except ``shapley``, whose permutation
chunks fan out over the task runner named in ``params.yaml`` (``pipelines.fanout``) and are then recorded
with ``dvc commit``. Stages run one after another: DVC holds a repository lock while a stage runs. All
stages of one flow run share an MLflow parent run; the flow logs its id, marks it FAILED when a stage
fails (even one that died before opening its own run), and publishes a markdown artifact with the outputs.

    python -m pipelines.flow [--project .] [--params params.yaml]   # ephemeral Prefect (no server needed)
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from pipelines import entry_args
from pipelines.dag import StageFailed, dvc, metrics_files, stage_changed, stage_command, stage_order, stage_outputs
from smpq.config import load_params
from stages.run_info import numeric
from stages.shapley_worker import STAGE as FANOUT_STAGE
from stages.shapley_worker import stage_inputs
from stages.tracking import PIPELINE_ENV, fail_pipeline_run, find_parent_run, tracking_uri

TAIL = 3000
__all__ = ["StageFailed", "main", "pipeline_flow", "run_stage", "smpq_pipeline"]


def run_logger():
    """The logger of the current Prefect flow or task run."""
    from prefect import get_run_logger

    return get_run_logger()


def run_stage(stage: str, project: str, pipeline_id: str) -> str:
    """``dvc repro --single-item stage`` in ``project``; its output goes to the task log."""
    proc = dvc(Path(project), "repro", "--single-item", stage, env={PIPELINE_ENV: pipeline_id})
    run_logger().info("%s\n%s", stage, proc.stdout[-TAIL:])
    if proc.returncode != 0:
        raise StageFailed(f"stage {stage!r} failed (exit {proc.returncode}):\n{proc.stderr[-TAIL:]}")
    return stage


@functools.cache
def stage_task():
    """``run_stage`` as the Prefect task ``dvc-stage`` (one task run per stage, named after it)."""
    from prefect import task

    return task(name="dvc-stage", task_run_name="{stage}", retries=0)(run_stage)


def run_shapley(root: Path, pipeline_id: str, fanout, cpu_kernels: str = "native") -> None:
    """The fan-out subflow on the runner ``fanout`` names, unless ``dvc status`` says nothing changed."""
    from pipelines.fanout import run_fanout

    if not stage_changed(root, FANOUT_STAGE):
        run_logger().info("Stage '%s' didn't change, skipping", FANOUT_STAGE)
        return
    run_fanout(str(root), pipeline_id, fanout, cpu_kernels)


def load_settings(root: Path, params: str):
    """The validated params file the flow reads (fan-out, tracking), which must be the one the stages use."""
    settings_path = (root / params).resolve()
    stage_params, _ = stage_inputs(stage_command(root, FANOUT_STAGE), root)
    if stage_params.resolve() != settings_path:
        raise ValueError(f"the flow's params file {settings_path} is not the one dvc.yaml gives the stages "
                         f"({stage_params.resolve()}); pass --params {stage_params.relative_to(root)}")
    return load_params(settings_path)


def _report_failure(tracking, root: Path, pipeline_id: str) -> None:
    """Mark the MLflow parent FAILED without hiding the stage's own error if MLflow fails too."""
    try:
        run_logger().error("MLflow parent run %s marked FAILED", fail_pipeline_run(tracking, root, pipeline_id))
    except Exception as err:  # the stage's exception is what the user needs; keep it on top
        run_logger().error("could not mark the MLflow parent run FAILED: %s", err)


def publish(root: Path, stages: list[str], metrics: dict, parent: str | None, tracking) -> None:
    """A markdown artifact: the MLflow parent run, the paths of the last stage's outputs (the report) and of
    every stage's metrics file (plain paths: the Prefect UI cannot open ``file://`` links), and the final
    metrics under the names DVC and MLflow use, rounded to 4 significant digits."""
    from prefect.artifacts import create_markdown_artifact

    files = stage_outputs(root, stages[-1]) + [p for s in stages[:-1] for p in metrics_files(root, s)]
    lines = ["# SMPQ pipeline run", "", f"- project: `{root}`",
             f"- MLflow parent run: `{parent}` in `{tracking_uri(tracking, root)}`" if parent
             else "- MLflow: no stage ran (everything was up to date)"]
    lines += [f"- `{path}`" for path in files if path.exists()]
    lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in numeric(metrics).items()]
    create_markdown_artifact(markdown="\n".join(lines), key="smpq-run", description="SMPQ outputs and metrics")


def smpq_pipeline(project: str = ".", params: str = "params.yaml") -> dict:
    """All stages of ``dvc.yaml`` in dependency order; returns the last stage's metrics."""
    from prefect.runtime import flow_run

    root = Path(project).resolve()
    settings = load_settings(root, params)
    stages = stage_order(root)
    pipeline_id = f"prefect-{flow_run.get_id() or 'local'}"
    logger = run_logger()
    logger.info("pipeline %s: %s", pipeline_id, " -> ".join(stages))
    try:
        for stage in stages:
            if stage == FANOUT_STAGE:
                run_shapley(root, pipeline_id, settings.fanout, settings.runtime.cpu_kernels)
            else:
                stage_task()(stage, str(root), pipeline_id)
    except BaseException:
        _report_failure(settings.tracking, root, pipeline_id)
        raise
    parent = find_parent_run(settings.tracking, root, pipeline_id) if settings.tracking.enabled else None
    if parent:
        logger.info("MLflow parent run: %s (%s)", parent, tracking_uri(settings.tracking, root))
    else:
        logger.info("no MLflow parent run: %s", "tracking is off" if not settings.tracking.enabled
                    else "no stage ran (every stage was up to date)")
    metrics = {}
    for path in metrics_files(root, stages[-1]):
        metrics.update(json.loads(path.read_text()))
    publish(root, stages, metrics, parent, settings.tracking)
    return metrics


@functools.cache
def pipeline_flow():
    """``smpq_pipeline`` as the Prefect flow ``smpq-pipeline``; Prefect is imported here, on first use, so an
    entry point can call ``offline_environment()`` first (Prefect reads its settings once, at import)."""
    from prefect import flow

    return flow(name="smpq-pipeline", log_prints=True)(smpq_pipeline)


def main(argv: list[str] | None = None) -> None:
    args = entry_args("python -m pipelines.flow", __doc__.splitlines()[0], argv)
    metrics = pipeline_flow()(project=args.project, params=args.params)
    sys.stdout.write(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
