"""Benchmark: what each stage of the default pipeline costs (wall time, peak memory) and a few unit costs.

Why: to know where the wall time of ``dvc repro`` goes and what a bigger setting would need. Measured:

- wall time per stage as MLflow recorded it (latest FINISHED child run of each stage in the project's
  ``mlflow.db``, read from a copy of the file) and in a fresh re-run;
- the re-run: a scratch copy of the project (``bench.workspace.make_copy``; never the project itself),
  ``dvc repro`` there with ``python`` on PATH wrapped in ``/usr/bin/time -v``, so every stage command of
  ``dvc.yaml`` reports its own wall time and peak RSS; then the no-op ``dvc repro`` time (everything up to
  date) in that copy;
- value evaluations per second of the masked supernet vs a plain FP forward and the fixed-policy quantized
  model (``bench.coalition_eval``'s functions, trained weights of ``data/pretrain`` when present);
- the exact ILP (MCKP) time on a ResNet-18-sized instance (``bench.mckp``'s instance).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import coalition_eval, mckp
from bench.workspace import PROJECT, SCRATCH, TINY, clean_env, make_copy, project_workspace, set_threads, sh
from pipelines.dag import stage_order
from smpq.artifacts import read_json, write_json, write_text
from smpq.models.registry import create_model
from smpq.select import solve_mckp

TIME = Path("/usr/bin/time")
SHIM = '#!/bin/sh\nexec {time} -v -o "$SMPQ_TIME_DIR/$$.txt" {python} "$@"\n'


def parse_time(text: str) -> dict:
    """Stage name, wall seconds and peak RSS (MB) from one ``/usr/bin/time -v`` report."""
    fields = dict(line.strip().rsplit(": ", 1) for line in text.splitlines() if ": " in line)
    words = fields["Command being timed"].strip('"').split()
    stage = words[words.index("-m") + 1].removeprefix("stages.")
    if "--method" in words:
        stage += "@" + words[words.index("--method") + 1]
    clock = [float(x) for x in fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")]
    seconds = sum(x * 60 ** i for i, x in enumerate(reversed(clock)))
    return {"stage": stage, "wall_seconds": seconds,
            "peak_rss_mb": int(fields["Maximum resident set size (kbytes)"]) / 1024,
            "exit_status": int(fields.get("Exit status", 0))}


def rerun(project: Path, targets: list[str]) -> dict:
    """``dvc repro`` in the copy with every stage under ``/usr/bin/time -v``; then the no-op repro time."""
    if not TIME.exists():
        raise SystemExit("error: /usr/bin/time is missing; install it (apt-get install -y time)")
    shim_dir, reports = project / ".bench_shim", project / ".bench_time"
    shim_dir.mkdir()
    reports.mkdir()
    shim = shim_dir / "python"
    shim.write_text(SHIM.format(time=TIME, python=sys.executable))
    shim.chmod(0o755)
    env = clean_env(project)
    timed_env = env | {"PATH": f"{shim_dir}{os.pathsep}{env['PATH']}", "SMPQ_TIME_DIR": str(reports)}
    _, repro_seconds = sh(["dvc", "repro", *targets], project, timed_env)
    stages = sorted((parse_time(p.read_text()) for p in reports.glob("*.txt")), key=lambda s: s["stage"])
    noop = [sh(["dvc", "repro", *targets], project, env) for _ in range(2)]
    if any("Running stage" in out for out, _ in noop):
        raise RuntimeError("the second dvc repro ran a stage; it should have been a no-op")
    return {"repro_seconds": repro_seconds, "stages": stages, "noop_repro_seconds": [s for _, s in noop]}


def mlflow_stage_times(db: Path, experiment: str = "smpq") -> list[dict]:
    """Latest FINISHED run of every stage in an MLflow SQLite store (read from a copy; the store is untouched)."""
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "mlflow.db"
        shutil.copy(db, copy)
        client = MlflowClient(tracking_uri=f"sqlite:///{copy}")
        found = client.get_experiment_by_name(experiment)
        query = "tags.`smpq.role` = 'stage' and attributes.status = 'FINISHED'"
        runs = client.search_runs([found.experiment_id], query, max_results=5000,
                                  order_by=["attributes.start_time DESC"]) if found else []
    latest = {}
    for run in runs:
        latest.setdefault(run.info.run_name, run)
    return [{"stage": name, "wall_seconds": (r.info.end_time - r.info.start_time) / 1e3,
             "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.info.start_time / 1e3)),
             "pipeline": r.data.tags.get("smpq.pipeline_id")} for name, r in sorted(latest.items())]


def evaluation_rates(batch: int, repeats: int, evals: int, weights: Path | None) -> dict:
    """Evaluations/s: plain FP forward, fixed-policy quantized forward, masked supernet (random coalitions)."""
    supernet, fixed_model, images, _ = coalition_eval.build(0, batch, str(weights) if weights else None)
    fp = create_model("compact_resnet", 10, 1, pretrained=str(weights) if weights else None).eval()
    masks = coalition_eval.random_coalitions(supernet, evals * (repeats + 1), np.random.default_rng(0))

    def masked(chunk):
        for mask in chunk:
            supernet.set_coalition(mask)
            supernet(images)

    runs = {"fp_forward": lambda r: [fp(images) for _ in range(evals)],
            "fixed_policy_forward": lambda r: [fixed_model(images) for _ in range(evals)],
            "masked_evaluation": lambda r: masked(masks[r * evals:(r + 1) * evals])}
    rates = {name: [] for name in runs}
    with torch.no_grad():
        for run in runs.values():
            run(repeats)  # warm-up on the spare chunk
        for r in range(repeats):  # interleaved, so load changes hit every variant alike
            for name, run in runs.items():
                rates[name].append(coalition_eval.rate(lambda run=run, r=r: run(r), evals))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    return {"batch": batch, "per_second": medians,
            "masked_vs_fp": medians["masked_evaluation"] / medians["fp_forward"],
            "masked_vs_fixed": medians["masked_evaluation"] / medians["fixed_policy_forward"]}


def ilp_time(repeats: int) -> dict:
    """Median solve time (ms) of the exact MCKP on bench.mckp's ResNet-18-sized instance."""
    values, costs, budget = mckp.instance(0)
    solve_mckp(values, costs, budget)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve_mckp(values, costs, budget)
        times.append(1e3 * (time.perf_counter() - start))
    return {"groups": len(values), "items": len(values[0]), "median_ms": statistics.median(times),
            "max_ms": max(times), "repeats": repeats}


def dag_key(stage: str, order: list[str]) -> tuple[int, str]:
    """The stage's place in ``order`` (the pipeline order of ``dvc.yaml``), for the table."""
    return (order.index(stage) if stage in order else len(order), stage)


def markdown(report: dict) -> str:
    project = {s["stage"]: s for s in report["mlflow_project"]}
    copy = {s["stage"]: s for s in report["mlflow_copy"]}
    lines = ["| stage | re-run: process wall s | re-run: MLflow run s | re-run: peak RSS MB | "
             "project store: MLflow run s (started, UTC) |", "|---|---:|---:|---:|---|"]
    order = report.get("stage_order", [])
    for s in sorted(report["rerun"]["stages"], key=lambda s: dag_key(s["stage"], order)):
        inner, recorded = copy.get(s["stage"]), project.get(s["stage"])
        lines.append(f"| {s['stage']} | {s['wall_seconds']:.1f} | "
                     f"{'–' if inner is None else format(inner['wall_seconds'], '.1f')} | {s['peak_rss_mb']:.0f} | "
                     + ("–" if recorded is None else f"{recorded['wall_seconds']:.1f} ({recorded['started']})")
                     + " |")
    rerun, rates, ilp = report["rerun"], report["evaluation_rates"], report["ilp"]
    noop = ", ".join(f"{s:.1f}" for s in rerun["noop_repro_seconds"])
    per_s = ", ".join(f"{k} {v:.1f}/s" for k, v in rates["per_second"].items())
    lines += ["", f"- full `dvc repro` in the copy: {rerun['repro_seconds']:.0f} s; no-op `dvc repro`: {noop} s",
              f"- batch {rates['batch']}: {per_s}; masked/FP = {rates['masked_vs_fp']:.2f}, "
              f"masked/fixed = {rates['masked_vs_fixed']:.2f}",
              f"- MCKP {ilp['groups']}x{ilp['items']} (ResNet-18-sized): median {ilp['median_ms']:.1f} ms "
              f"(max {ilp['max_ms']:.1f}) over {ilp['repeats']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny params in the copy (smoke test, not a result)")
    parser.add_argument("--targets", nargs="*", default=[], help="dvc repro targets (default: the whole DAG)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the copy goes (default: a new temp dir)")
    parser.add_argument("--batch", type=int, default=1024, help="batch of the evaluation-rate measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=SCRATCH / "stage_costs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render", action="store_true", help="only print OUT/stage_costs.json as markdown")
    args = parser.parse_args(argv)
    if args.render:
        report = read_json(args.out / "stage_costs.json")
        print(markdown(report))
        return report
    set_threads(args.threads)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stage_costs_", dir=SCRATCH))
    workdir.mkdir(parents=True, exist_ok=True)
    copy = make_copy(workdir / "project", TINY | {"tracking.enabled": False} if args.tiny else None).root
    weights = project_workspace().data("pretrain") / "model.pt"
    report = {"copy": str(copy), "rerun": rerun(copy, args.targets), "stage_order": stage_order(copy),
              "mlflow_project": mlflow_stage_times(PROJECT / "mlflow.db"),
              "mlflow_copy": mlflow_stage_times(copy / "mlflow.db"),
              "evaluation_rates": evaluation_rates(args.batch, args.repeats, 2 if args.tiny else 5,
                                                   weights if weights.exists() else None),
              "ilp": ilp_time(args.repeats), "tiny": args.tiny, "threads": args.threads}
    write_json(args.out / "stage_costs.json", report)
    write_text(args.out / "stage_costs.md", markdown(report) + "\n")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
