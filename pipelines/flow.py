"""Prefect flow: run the DVC stages in DAG order, one task per stage, and return the final metrics.

Each task runs ``dvc repro --single-item <stage>``, so ``dvc.lock`` stays consistent, unchanged stages
are skipped, and the outputs are exactly those of ``dvc repro``. Stages run one after another: DVC
holds a repository lock while a stage runs. All stages of one flow run share an MLflow parent run.

    python -m pipelines.flow            # ephemeral Prefect (no server needed)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from pipelines.dag import metrics_files, stage_order

PIPELINE_ENV = "SMPQ_PIPELINE_RUN_ID"  # read by stages/tracking.py to group the stages' MLflow runs
TAIL = 3000


class StageFailed(RuntimeError):
    """A DVC stage exited with a non-zero status."""


@task(name="dvc-stage", task_run_name="{stage}", retries=0)
def run_stage(stage: str, project: str, pipeline_id: str) -> str:
    """``dvc repro --single-item stage`` in ``project``; its output goes to the task log."""
    logger = get_run_logger()
    env = {**os.environ, PIPELINE_ENV: pipeline_id}
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "repro", "--single-item", stage], cwd=project, env=env,
                          capture_output=True, text=True)
    logger.info("%s\n%s", stage, proc.stdout[-TAIL:])
    if proc.returncode != 0:
        raise StageFailed(f"stage {stage!r} failed (exit {proc.returncode}):\n{proc.stderr[-TAIL:]}")
    return stage


@flow(name="smpq-pipeline", log_prints=True)
def smpq_pipeline(project: str = ".") -> dict:
    """All stages of ``dvc.yaml`` in dependency order; returns the last stage's metrics."""
    root = Path(project).resolve()
    stages = stage_order(root)
    pipeline_id = f"prefect-{flow_run.get_id() or 'local'}"
    get_run_logger().info("pipeline %s: %s", pipeline_id, " -> ".join(stages))
    for stage in stages:
        run_stage(stage, str(root), pipeline_id)
    metrics = {}
    for path in metrics_files(root, stages[-1]):
        metrics.update(json.loads(path.read_text()))
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.flow", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project folder holding dvc.yaml (default: .)")
    args = parser.parse_args(argv)
    print(json.dumps(smpq_pipeline(project=args.project), indent=2))


if __name__ == "__main__":
    main()
