"""Stage ``shapley``: the Shapley value of every bit-width candidate on the trained supernet (SPEC §3.3).

The units run in the ``fanout.chunks`` chunks that the Prefect flow fans out over workers
(``stages.shapley_worker``), one after another here, so ``dvc repro`` and the flow write the same files:
``data/shapley/shapley.json`` and ``results/shapley/metrics.json`` byte for byte (neither holds a timing;
the timings go to MLflow and the ``--timings`` file).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from smpq.artifacts import read_json, write_json
from smpq.config import Params
from smpq.progress import Counted, Progress
from smpq.shapley.estimate import ShapleyResult, combine, run_units, shapley_values
from smpq.shapley.reliability import rank_agreement, spearman_brown
from smpq.shapley.sampling import Samples
from stages.plots import shapley_convergence, shapley_heatmap
from stages.run_info import numeric
from stages.session import parse_args, session
from stages.shapley_worker import STAGE, Game, ShapleyPaths, chunk_plan, game
from stages.tracking import Tracker

log = logging.getLogger("smpq.stage.shapley")

SECTIONS = ("quant", "shapley", "fanout")  # the params sections logged with the stage's MLflow run
SHAPLEY_FILE = "shapley.json"
TIMINGS = ("wall_seconds", "evaluations_per_second")  # in the returned metrics, never in metrics.json


def run(params: Params, paths: ShapleyPaths) -> dict:
    """All chunks in this process (each memoised on its own, as on a worker); returns the metrics written."""
    g, cfg = game(params, paths), params.shapley
    start = time.perf_counter()
    units = run_units(cfg.max_permutations, cfg.estimator, cfg.antithetic)[0]
    expected = units * sum(2 ** len(group) - 1 for group in g.groups) + 2  # exact for within_group, else a guess
    with Progress(units, f"shapley {cfg.estimator}", unit="unit") as bar, \
            Progress(expected, f"shapley {cfg.estimator} evaluations", unit="evaluation", bar=False) as counter:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = shapley_values(Counted(g.value_fn, counter), len(g.players), seed=params.seed, groups=g.groups,
                                max_permutations=cfg.max_permutations, tolerance=cfg.tolerance,
                                chunks=params.fanout.chunks, progress=progress, **cfg.method)
    return write_outputs(params, g, result, paths, time.perf_counter() - start)


def finish(params: Params, paths: ShapleyPaths, blocks: Sequence[Samples], seconds: float) -> dict:
    """Merge fanned-out chunks (stopping rule applied as in the sequential run) and write the outputs."""
    result = combine(blocks, antithetic=params.shapley.antithetic, tolerance=params.shapley.tolerance)
    return write_outputs(params, game(params, paths), result, paths, seconds)


def write_outputs(params: Params, g: Game, result: ShapleyResult, paths: ShapleyPaths, seconds: float) -> dict:
    """``shapley.json`` (players, totals, trace), ``metrics.json`` (``shapley.<total>``) and the two plots;
    returns the totals with the timings."""
    cfg = params.shapley
    alpha = read_json(paths.supernet / "alpha.json")
    players = [{"layer": p.layer, "kind": p.kind, "bits": p.bits, "value": float(result.values[i]),
                "stderr": _finite(result.stderr[i]), "batch_stderr": _finite(result.batch_stderr[i]),
                "samples": int(result.n_samples[i]), "alpha_probability": _alpha_probability(alpha, p)}
               for i, p in enumerate(g.players)]
    half_rho = rank_agreement(result.halves[0], result.halves[1], g.groups)
    totals = {"estimator": cfg.estimator, "value": cfg.value, "empty_group": cfg.empty_group,
              "reference_bits": cfg.reference_bits, "evaluations": result.n_evaluations,
              "permutations": result.n_permutations, "chunks": len(chunk_plan(params)), "v_full": result.v_full,
              "v_empty": result.v_empty, "batch_size": cfg.batch_size, "batches": cfg.batches,
              "max_stderr": _largest(np.r_[result.stderr, result.batch_stderr]),
              "split_half_rho": _finite(half_rho), "reliability": _finite(spearman_brown(half_rho))}
    write_json(paths.out / SHAPLEY_FILE, {"players": players, "totals": totals,
                                          "trace": {"evaluations": [int(e) for e in result.trace_evaluations],
                                                    "estimates": [[float(v) for v in row] for row in result.trace]}})
    metrics = totals | {"wall_seconds": seconds, "evaluations_per_second": result.n_evaluations / max(seconds, 1e-9)}
    write_json(paths.results / "metrics.json", {"shapley": totals})  # names: stages/run_info.py
    shapley_convergence(result.trace_evaluations, result.trace, paths.results / "convergence.png")
    shapley_heatmap(players, paths.results / "heatmap.png")
    log.info("shapley: %s on %s, %d evaluations; split-half ρ %.3f (reliability %.3f)", cfg.estimator, cfg.value,
             result.n_evaluations, half_rho, spearman_brown(half_rho))
    return metrics


def record(tracker: Tracker, metrics: dict, paths: ShapleyPaths) -> None:
    """Numeric metrics (``shapley.<total>``, timings bare) plus the results folder and ``shapley.json`` as
    artifacts of the stage's run."""
    tracker.log_metrics(numeric({"shapley": {k: v for k, v in metrics.items() if k not in TIMINGS}}))
    tracker.log_metrics(numeric({k: metrics[k] for k in TIMINGS}))
    tracker.log_artifact(paths.results)
    tracker.log_artifact(paths.out / SHAPLEY_FILE)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(STAGE, ShapleyPaths.names(), argv)
    with session(STAGE, args, sections=SECTIONS) as s:
        paths = ShapleyPaths(*(getattr(args, name) for name in ShapleyPaths.names()))
        record(s.tracker, metrics := run(s.params, paths), paths)
        s.record({}, timings={k: metrics[k] for k in TIMINGS})


def _alpha_probability(alpha: dict, player) -> float:
    group = alpha[player.layer][player.kind]
    return float(group["probabilities"][group["bits"].index(player.bits)])


def _largest(errors: np.ndarray) -> float | None:
    finite = errors[np.isfinite(errors)]
    return float(finite.max()) if finite.size else None


def _finite(x) -> float | None:
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


if __name__ == "__main__":
    main()
