"""Benchmark: Shapley estimators at equal numbers of value evaluations on the trained default supernet (SPEC §3.3).

Why: the cost of the Shapley estimate is the obvious objection to SMPQ, and the project's default must beat
the Shapley-NAS setting it mirrors. One game for everyone: the default pipeline's trained supernet
(``data/prepared``, ``data/pretrain``, ``data/calibrate``, ``data/supernet``, read only), frozen, value =
``shapley.value`` on one fixed seeded ``search_val`` batch of ``--batch`` images (default 128; Shapley-NAS draws
a fresh batch per permutation, here the game is fixed so that every estimator estimates the same values).
Cost: proportional to the default's evaluations (reference and curves are multiples of it). With the earlier
default (20 untruncated permutations, 1 258 evaluations) the study's 54 561 evaluations took 865 s on 2 cores
(measured 2026-11-26, docs/RESULTS.md §2); today's default (2 484 evaluations) took 25 minutes with
``--max-factor 2`` (90 297 forwards, 2026-11-27, §2b); expect about 30 minutes at the default factors.

- reference: antithetic permutation sampling, no truncation, ≥ ``--reference-factor`` × the default's
  evaluations, its own seed;
- estimators: ``shapley_nas`` (remove, truncation 0.5, no antithetic; its M = 10 point is marked), ``plain``
  (remove, no truncation), ``antithetic``, ``antithetic_trunc`` (antithetic + truncation 0.5), ``default``
  (``params.yaml`` ``shapley``: its own stopping point, and its curve with more permutations), and the
  ``tolerance`` stopping rule (antithetic, a grid of tolerances);
- each estimator on ``--seeds`` seeds; its running estimate (``ShapleyResult.trace``) gives the estimate at
  every evaluation count, so a grid of budgets costs one run; antithetic curves only at complete pairs.

Reported per estimator and budget (medians over seeds): Spearman ρ over all candidates and max |error| vs the
reference; the evaluations after which ρ stays ≥ 0.8, 0.9 and 0.95 (the goal is stated at 0.95); Pearson r;
and what the selection sees: the fraction of layers where the ``select`` stage's integer program at
``select.budget`` picks the same bits from the estimate as from the reference. The reference's own
split-half ρ bounds what any estimator can show. All runs share one memo of coalition values (a coalition is
computed once); evaluation counts are the library's own (distinct coalitions per run).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from bench.workspace import SCRATCH, Workspace, default_params, load_game, override, project_workspace, \
    set_threads
from smpq.artifacts import read_json, write_json, write_text
from smpq.cost import CostTable
from smpq.select import select_policy
from smpq.shapley import ShapleyResult, shapley_values
from stages.inputs import fixed_bits
from stages.select import budget as select_budget

log = logging.getLogger("bench.estimator")

REMOVE = "remove"
CONFIGS = {
    "shapley_nas": {"antithetic": False, "truncation": 0.5, "direction": REMOVE},
    "plain": {"antithetic": False, "truncation": None, "direction": REMOVE},
    "antithetic": {"antithetic": True, "truncation": None, "direction": REMOVE},
    "antithetic_trunc": {"antithetic": True, "truncation": 0.5, "direction": REMOVE},
}
NAS_PERMUTATIONS = 10
RHO_TARGET = 0.95
TARGETS = (0.8, 0.9, RHO_TARGET)  # ρ levels whose cost is reported (0.95 is the goal)
TOLERANCES = (0.1, 0.07, 0.05, 0.04, 0.03)  # max standard error; the default's 20 permutations reach ≈ 0.05
GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 3.0)  # budgets as fractions of the default's evaluations
REFERENCE_SEED = 1000


class SharedGame:
    """The value function memoised across every run of the study; ``forwards`` counts real evaluations."""

    def __init__(self, value_fn):
        self.value_fn, self.cache, self.forwards = value_fn, {}, 0

    def __call__(self, mask: np.ndarray) -> float:
        key = mask.tobytes()
        if key not in self.cache:
            self.cache[key] = float(self.value_fn(mask))
            self.forwards += 1
        return self.cache[key]


def run_until(game, n: int, config: dict, seed: int, evaluations: int) -> ShapleyResult:
    """The estimator run long enough to spend ≥ ``evaluations`` (longer reruns reuse the memo)."""
    unit = 2 if config["antithetic"] else 1
    permutations = max(2, unit * math.ceil(evaluations / (n - 1) / unit))
    while True:
        result = shapley_values(game, n, seed=seed, max_permutations=permutations, **config)
        if result.n_evaluations >= evaluations or permutations >= 200 * n:
            return result
        grow = evaluations / max(result.n_evaluations, 1) * 1.1
        permutations = unit * math.ceil(permutations * grow / unit)


def errors(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(Spearman ρ, max |error|) of one estimate against the reference; ρ = 0 for a constant estimate."""
    rho = spearmanr(values, reference).statistic
    return (0.0 if not np.isfinite(rho) else float(rho)), float(np.max(np.abs(values - reference)))


def selector(params, ws: Workspace, players):
    """``choose(values) -> {layer: bits}``: the ``select`` stage's SMPQ integer program at ``select.budget``."""
    table = CostTable.from_dict(read_json(ws.data("calibrate") / "cost_table.json"))
    bitops_budget, size_budget = select_budget(params, table)
    keys = [(p.layer, p.kind, p.bits) for p in players]

    def choose(values) -> dict:
        policy = select_policy(dict(zip(keys, map(float, values))), table, bitops_budget, fixed_bits(params, table),
                               w_bits=params.quant.w_bits, a_bits=params.quant.a_bits, size_budget_bytes=size_budget)
        return {layer: str(policy[layer]) for layer in table.searchable}
    return choose


def agreement(choice: dict, reference_choice: dict) -> float:
    """Fraction of searchable layers where a selection equals the reference values' selection."""
    return sum(choice[k] == v for k, v in reference_choice.items()) / len(reference_choice)


def curve(result: ShapleyResult, reference: np.ndarray, antithetic: bool, budgets=(), choose=None,
          reference_choice=None) -> dict:
    """ρ, Pearson r and max error of the running estimate at every permutation (complete pairs only if
    antithetic); at each of ``budgets`` also the agreement of its selection with the reference's."""
    keep = [k for k in range(result.n_permutations) if not antithetic or k % 2 == 1]
    points = [errors(result.trace[k], reference) for k in keep]
    c = {"evaluations": [int(result.trace_evaluations[k]) for k in keep], "permutations": [k + 1 for k in keep],
         "rho": [p[0] for p in points], "max_error": [p[1] for p in points],
         "pearson": [_pearson(result.trace[k], reference) for k in keep], "agreement": {}}
    for b in budgets:
        fits = [i for i, e in enumerate(c["evaluations"]) if e <= b]
        c["agreement"][b] = agreement(choose(result.trace[keep[fits[-1]]]), reference_choice) if fits else None
    return c


def _pearson(values: np.ndarray, reference: np.ndarray) -> float:
    r = pearsonr(values, reference).statistic if np.ptp(values) > 0 else 0.0
    return float(r) if np.isfinite(r) else 0.0


def at_budget(c: dict, budget: float) -> tuple | None:
    """(ρ, max error, Pearson r, agreement) of the last estimate within ``budget`` evaluations; None if none fits."""
    fits = [i for i, e in enumerate(c["evaluations"]) if e <= budget]
    i = fits[-1] if fits else None
    return None if i is None else (c["rho"][i], c["max_error"][i], c["pearson"][i], c["agreement"].get(budget))


def evaluations_to_target(c: dict, target: float = RHO_TARGET) -> float:
    """Evaluations after which ρ stays ≥ ``target`` to the end of the run (inf if it never does)."""
    below = [i for i, r in enumerate(c["rho"]) if r < target]
    first = below[-1] + 1 if below else 0
    return float(c["evaluations"][first]) if first < len(c["rho"]) else math.inf


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def point(result: ShapleyResult, reference: np.ndarray) -> dict:
    rho, err = errors(result.values, reference)
    return {"evaluations": result.n_evaluations, "permutations": result.n_permutations, "rho": rho, "max_error": err}


def study(game, n: int, params, seeds: list[int], reference_factor: float, max_factor: float, choose) -> dict:
    """Reference, per-seed curves and points of every estimator, and their medians."""
    cfg = params.shapley
    default = cfg.walk
    default_runs = {s: shapley_values(game, n, seed=s, max_permutations=cfg.max_permutations,
                                      tolerance=cfg.tolerance, **default) for s in seeds}
    e_default = statistics.median(r.n_evaluations for r in default_runs.values())
    log.info("default: %g evaluations; reference run next (%d forwards so far)", e_default, game.forwards)
    ref = run_until(game, n, CONFIGS["antithetic"], REFERENCE_SEED, math.ceil(reference_factor * e_default))
    reference = np.asarray(ref.values)
    reference_choice = choose(reference)
    # only budgets the curves reach: a column past a curve's end would repeat its last estimate
    budgets = [max(1, round(f * e_default)) for f in GRID if f <= max_factor]
    configs = {**CONFIGS, "default": default}
    curves = {}
    for name, c in configs.items():
        log.info("curves of %s (%d forwards so far)", name, game.forwards)
        curves[name] = {s: curve(run_until(game, n, c, s, math.ceil(max_factor * e_default)), reference,
                                 c["antithetic"], budgets, choose, reference_choice) for s in seeds}
    table = {name: {"budgets": {b: _medians([at_budget(c, b) for c in per_seed.values()]) for b in budgets},
                    "evaluations_to": {str(t): _finite(median(evaluations_to_target(c, t) for c in per_seed.values()))
                                       for t in TARGETS}}
             for name, per_seed in curves.items()}
    nas = {s: point(shapley_values(game, n, seed=s, max_permutations=NAS_PERMUTATIONS, **CONFIGS["shapley_nas"]),
                    reference) for s in seeds}
    cap = {s: curves["antithetic"][s]["permutations"][-1] for s in seeds}
    tolerance = {t: {s: point(shapley_values(game, n, seed=s, max_permutations=cap[s], tolerance=t,
                                             **CONFIGS["antithetic"]), reference) for s in seeds}
                 for t in TOLERANCES}
    return {"default_config": {**default, "max_permutations": cfg.max_permutations, "tolerance": cfg.tolerance},
            "default_evaluations": e_default, "budgets": budgets,
            "reference": {"evaluations": ref.n_evaluations, "permutations": ref.n_permutations,
                          "max_stderr": float(np.nanmax(ref.stderr)), "split_half_rho": split_half(ref),
                          "values": reference.tolist(), "selection": reference_choice},
            "table": table, "curves": curves,
            "points": {"default": _point_medians({s: point(r, reference) for s, r in default_runs.items()}),
                       f"shapley_nas_M{NAS_PERMUTATIONS}": _point_medians(nas),
                       **{f"tolerance_{t:g}": _point_medians(v) for t, v in tolerance.items()}},
            "per_seed_points": {"default": {s: point(r, reference) for s, r in default_runs.items()},
                                "shapley_nas": nas, "tolerance": {str(t): v for t, v in tolerance.items()}}}


def split_half(result: ShapleyResult) -> float:
    """ρ between the reference's first and second half of permutations: how noisy the reference itself is."""
    k = result.n_permutations
    half = (k // 4) * 2
    first = result.trace[half - 1]
    second = (result.trace[k - 1] * k - first * half) / (k - half)
    return errors(first, second)[0]


def _finite(x: float | None) -> float | None:
    """inf ("never reached") becomes None, so the JSON stays standard."""
    return None if x is None or math.isinf(x) else x


def _medians(points: list) -> dict:
    kept = [p for p in points if p is not None]
    return {"rho": median(p[0] for p in kept), "max_error": median(p[1] for p in kept),
            "pearson": median(p[2] for p in kept), "agreement": median(p[3] for p in kept), "seeds": len(kept)}


def _point_medians(points: dict) -> dict:
    return {key: median(p[key] for p in points.values()) for key in ("evaluations", "permutations", "rho",
                                                                     "max_error")}


def _fmt(cell: dict) -> str:
    return "–" if cell["rho"] is None else f"{cell['rho']:.3f} / {cell['max_error']:.4f}"


def _fmt_selection(cell: dict) -> str:
    return "–" if cell["pearson"] is None else f"{cell['pearson']:.3f} / {cell['agreement']:.2f}"


def _longest(result: dict, name: str) -> int:
    return min(c["evaluations"][-1] for c in result["curves"][name].values())


def markdown(result: dict) -> str:
    budgets = result["budgets"]
    lines = ["| estimator | " + " | ".join(f"ρ / max err @ {b} evals" for b in budgets) + " | "
             + " | ".join(f"evals to ρ ≥ {t:g}" for t in TARGETS) + " |",
             "|---|" + "---:|" * (len(budgets) + len(TARGETS))]
    for name, row in result["table"].items():
        cells = [_fmt(row["budgets"][b]) for b in budgets]
        reached = [row["evaluations_to"][str(t)] for t in TARGETS]
        cells += [f"{r:g}" if r is not None else f"> {_longest(result, name)}" for r in reached]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| estimator | " + " | ".join(f"Pearson r / selection agreement @ {b} evals" for b in budgets) + " |",
              "|---|" + "---:|" * len(budgets)]
    for name, row in result["table"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt_selection(row["budgets"][b]) for b in budgets) + " |")
    lines += ["", "| stopping point | evaluations | permutations | ρ | max err |", "|---|---:|---:|---:|---:|"]
    for name, p in result["points"].items():
        lines.append(f"| {name} | {p['evaluations']:g} | {p['permutations']:g} | {p['rho']:.3f} | "
                     f"{p['max_error']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="value batch (search_val images)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--reference-factor", type=float, default=20.0)
    parser.add_argument("--max-factor", type=float, default=3.0, help="each curve's length / default's evals")
    parser.add_argument("--workspace", type=Path, default=None, help="folder with data/<stage> (default: project)")
    parser.add_argument("--tiny", action="store_true", help="tiny game and runs (smoke test, not a result)")
    parser.add_argument("--out", type=Path, default=SCRATCH / "estimator")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    ws = Workspace(args.workspace) if args.workspace else project_workspace()
    if ws.missing():
        raise SystemExit(f"error: the trained default pipeline is missing ({', '.join(map(str, ws.missing()))}); "
                         "run `dvc repro` in the project first")
    params = default_params()
    if args.tiny:
        params = override(params, {"shapley.max_permutations": 2})
        args.batch, args.reference_factor = min(args.batch, 64), min(args.reference_factor, 2.0)
    value_fn, players = load_game(params, ws, args.batch)
    game, start = SharedGame(value_fn), time.perf_counter()
    result = study(game, len(players), params, args.seeds, args.reference_factor, args.max_factor,
                   selector(params, ws, players))
    seconds = time.perf_counter() - start
    result |= {"batch": args.batch, "seeds": args.seeds, "players": len(players), "wall_seconds": seconds,
               "forwards": game.forwards, "ms_per_forward": 1e3 * seconds / max(game.forwards, 1),
               "reference_factor": args.reference_factor, "max_factor": args.max_factor, "tiny": args.tiny}
    write_json(args.out / "estimator.json", result)
    write_text(args.out / "estimator.md", markdown(result) + "\n")
    print(markdown(result))
    ref = result["reference"]
    print(f"\nreference: {ref['permutations']} antithetic permutations, {ref['evaluations']} evaluations "
          f"({ref['evaluations'] / result['default_evaluations']:.1f}x the default's), max stderr "
          f"{ref['max_stderr']:.4f}, split-half ρ {ref['split_half_rho']:.3f}; batch {args.batch}, "
          f"{len(players)} players, {game.forwards} forwards in {seconds:.0f} s")
    return result


if __name__ == "__main__":
    main()
