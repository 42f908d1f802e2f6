"""What names and explains MLflow runs and DVC metrics (docs: README "Metric names").

Metric names are one scheme everywhere: ``<subject>.<quantity>`` where a file or run holds several subjects
(``fp``, ``smpq``, ``dmpq``, ``hawq``, ``uniform``, ``dmpq_argmax``, ``budget``, ``supernet``, ``shapley``,
``sensitivity``, ``calibrate``), the bare ``<quantity>`` inside a run about one subject (a
``finetune@<method>`` child run and its ``metrics.json``; its subject is the run's ``method`` param). Metrics
files nest by subject and DVC flattens them with dots, so DVC shows exactly the names that MLflow logs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TIMING_KEYS = ("epoch_seconds",)  # per-epoch timings: MLflow and the timings file only, never metrics files


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"smpq": {"top1": x}}`` → ``{"smpq.top1": x}`` (DVC's flattening, used for MLflow names)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The flattened numeric entries (bools and strings are not metrics)."""
    return {k: float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def split_timings(history: list[Mapping[str, float]]) -> tuple[list[dict], dict]:
    """A training history without its timings (deterministic, for ``history.json``) and the timings."""
    clean = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]
    seconds = [float(h.get("epoch_seconds", 0.0)) for h in history]
    return clean, {"train_seconds": sum(seconds), "epoch_seconds": seconds}


def budget_label(params: Any) -> str:
    """The select budget as the user wrote it: ``avg_bits=3`` or ``gbitops=1.25`` (``, size_mb=…``)."""
    b = params.select.budget
    form = f"avg_bits={b.avg_bits:g}" if b.avg_bits is not None else f"gbitops={b.gbitops:g}"
    return form + (f", size_mb={b.size_mb:g}" if b.size_mb is not None else "")


def stage_params(stage: str, params: Any, sections: tuple[str, ...]) -> dict[str, Any]:
    """A stage run's params: the seed and its ``sections``; a ``finetune@<method>`` run logs its ``method``
    and the ``budget`` instead of the list ``finetune.methods`` (equal in every run, so useless to compare)."""
    from smpq.config import as_flat_dict

    flat: dict[str, Any] = {"seed": params.seed}
    for section in sections:
        flat.update(as_flat_dict(getattr(params, section), section))
    if stage.startswith("finetune@"):
        flat.pop("finetune.methods", None)
        flat.update(method=stage.split("@", 1)[1], budget=budget_label(params))
    return flat


# MLflow 3's UI opens an experiment in its GenAI view unless this tag says otherwise (the values it knows are
# in its UI bundle: genai_development, custom_model_development, …); "custom_model_development" = the
# "Model training" view with the runs table.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DESCRIBED_TAG = "smpq.described"


def git_commit(root: Path) -> str | None:
    import subprocess

    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def pipeline_labels(params: Any, root: Path) -> dict[str, str]:
    """What tells one pipeline execution from another: DVC experiment, budget, model, dataset, commit."""
    labels = {"smpq.budget": budget_label(params), "smpq.model": params.model.name,
              "smpq.dataset": params.data.dataset}
    if exp := os.environ.get("DVC_EXP_NAME"):
        labels["smpq.dvc_experiment"] = exp
    if commit := git_commit(root):
        labels["mlflow.source.git.commit"] = commit
    return labels


def pipeline_run_name(labels: Mapping[str, str]) -> str:
    """``<dvc experiment> · avg_bits=3 · compact_resnet/fashion_mnist · 1a2b3c4`` (what varies first)."""
    parts = [labels.get("smpq.dvc_experiment"), labels["smpq.budget"],
             f"{labels['smpq.model']}/{labels['smpq.dataset']}", labels.get("mlflow.source.git.commit", "")[:7]]
    return " · ".join(p for p in parts if p)


def parent_of(tracker: Any) -> str | None:
    """The pipeline (parent) run id of a stage run; None when tracking is off."""
    if not tracker.run_id:
        return None
    return tracker.client.get_run(tracker.run_id).data.tags.get("mlflow.parentRunId")


def describe_pipeline_run(tracker: Any, params: Any, root: Path) -> str | None:
    """Name and tag the parent run from what varies and log the run's params on it (once: the first stage
    of the execution does it). Never fails the stage: a logging problem is a warning."""
    parent = parent_of(tracker)
    if parent is None:
        return None
    client = tracker.client
    try:
        if client.get_run(parent).data.tags.get(DESCRIBED_TAG):
            return parent
        from mlflow.entities import Param, RunTag

        from smpq.config import as_flat_dict

        labels = pipeline_labels(params, root)
        client.update_run(parent, name=pipeline_run_name(labels))
        items = [Param(k, str(v)[:6000]) for k, v in as_flat_dict(params).items()]
        for i in range(0, len(items), 100):
            client.log_batch(parent, params=items[i:i + 100])
        client.log_batch(parent, tags=[RunTag(k, v) for k, v in {**labels, DESCRIBED_TAG: "1"}.items()])
    except Exception as err:  # noqa: BLE001 — describing the run is a convenience, never a stage failure
        logging.getLogger(__name__).warning("MLflow: could not describe pipeline run %s: %s", parent, err)
    return parent


def record_summary(tracker: Any, metrics: Mapping[str, Any], *artifacts: tuple[Path, str]) -> None:
    """Summary metrics (same names as DVC's) and artifacts (``(path, folder)``) on the pipeline run."""
    parent = parent_of(tracker)
    if parent is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    tracker.client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in numeric(metrics).items()])
    for path, folder in artifacts:
        if path.is_dir():
            tracker.client.log_artifacts(parent, str(path), folder)
        elif path.exists():
            tracker.client.log_artifact(parent, str(path), folder)
