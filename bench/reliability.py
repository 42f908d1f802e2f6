"""Benchmark: do two Shapley runs that differ only in ``seed`` rank the candidates alike? (SPEC §3.3)

For each configuration of the ``shapley`` section and each of two seeds — the seed changes both the sampled
orderings and the ``search_val`` batch(es) of the game — the stage's own game is built on a trained project's
supernet (read only; ``--project``, default this checkout after ``dvc repro``) and estimated. Reported per
configuration: the group-centred Spearman ρ between the two runs (the ranking the selection uses; goal
≥ 0.8), in how many layers the ``smpq`` policies selected from them at ``select.budget`` agree (goal ≥ 6 of 8),
the regret (the share of the achievable objective range that one run's policy gives up under the other run's
values, mean of both directions: 0 means the two policies are equally good by either estimate), the value
evaluations and the wall time of one run (median of the two), the median standard errors over
orderings and over the batch (which noise dominates), and each run's own split-half reliability.

    python -m bench.reliability [--project .] [--seeds 0 1] [--only owen_8 ...] [--out docs/results/reliability.json]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.dag import stage_command
from smpq.artifacts import write_json
from smpq.config import load_params
from smpq.cost import Budget, CostTable
from smpq.policy import fixed_bits
from smpq.select import select_policy
from smpq.shapley.estimate import shapley_values
from smpq.shapley.reliability import rank_agreement, spearman_brown
from stages.shapley_worker import STAGE, build_game, stage_inputs

log = logging.getLogger("bench.reliability")

TODAY = {"estimator": "permutation", "value": "top1", "empty_group": "zero", "truncation": 0.5,
         "max_permutations": 80}


def revised(estimator: str, **extra) -> dict:
    """The revised game (SPEC §3.3): empty group = reference quantizer, value = −KL to the float model."""
    return {"estimator": estimator, "value": "neg_kl", "empty_group": "reference", "truncation": None, **extra}


CONFIGS = {
    "zero+top1+permutation (before)": TODAY,
    "reference+neg_kl+permutation": revised("permutation", max_permutations=38),
    "within_group": revised("within_group"),
    **{f"owen_{k}": revised("owen", max_permutations=k) for k in (2, 4, 8)},
    **{f"owen_{k}, {b} batches": revised("owen", max_permutations=k, batches=b) for k, b in ((8, 2), (4, 4), (2, 8))},
    **{f"within_group, {b} batches": revised("within_group", batches=b) for b in (4, 16)},
    "within_group, 8 batches (default)": revised("within_group", batches=8),
    "within_group, BN recalibration 8": revised("within_group", bn_recalibration=8),
}


def estimate(root: Path, overrides: dict, seed: int):
    """One run of the stage's estimator with ``overrides`` on the project's params and ``seed``."""
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    params = load_params(params_path, {"seed": seed, **{f"shapley.{k}": v for k, v in overrides.items()}})
    game = build_game(params, paths)
    start = time.perf_counter()
    result = shapley_values(game.value_fn, len(game.players), seed=params.seed, groups=game.groups,
                            max_permutations=params.shapley.max_permutations, tolerance=params.shapley.tolerance,
                            chunks=params.fanout.chunks, **params.shapley.method)
    return params, paths, game, result, time.perf_counter() - start


def smpq_policy(params, paths, game, values: np.ndarray):
    """The ``select`` stage's smpq policy for these values at ``select.budget``."""
    table = CostTable.load(paths.calibrate)
    fixed = fixed_bits(params.quant.first_last, table)
    scores = {(p.layer, p.kind, p.bits): float(v) for p, v in zip(game.players, values)}
    budget = Budget.from_config(params.select.budget, table, fixed)
    return select_policy(scores, table, budget, fixed, w_bits=params.quant.w_bits, a_bits=params.quant.a_bits)


def objective(game, values: np.ndarray, policy) -> float:
    """Σ φ over the candidates a policy chooses (what the selection maximises)."""
    return sum(float(v) for p, v in zip(game.players, values)
               if p.bits == (policy[p.layer].w_bits if p.kind == "w" else policy[p.layer].a_bits))


def regret(params, paths, game, values: np.ndarray, own, other) -> float:
    """How much of the achievable objective range the other run's policy gives up under these values:
    (obj(own) − obj(other)) / (obj(own) − obj(worst feasible policy)); 0 = as good, 1 = the worst."""
    worst = smpq_policy(params, paths, game, -values)
    span = objective(game, values, own) - objective(game, values, worst)
    return (objective(game, values, own) - objective(game, values, other)) / span if span > 0 else 0.0


def compare(root: Path, overrides: dict, seeds: list[int]) -> dict:
    runs = [estimate(root, overrides, seed) for seed in seeds]
    (params, paths, game, first, t1), (_, _, _, second, t2) = runs[0], runs[1]
    policies = [smpq_policy(params, paths, game, r[3].values) for r in runs]
    searchable = [name for name in policies[0] if name in {p.layer for p in game.players}]
    agree = sum(policies[0][n] == policies[1][n] for n in searchable)
    halves = [rank_agreement(r[3].halves[0], r[3].halves[1], game.groups) for r in runs]
    regrets = [regret(params, paths, game, r[3].values, policies[i], policies[1 - i]) for i, r in enumerate(runs)]
    return {"rho": rank_agreement(first.values, second.values, game.groups), "agree": agree,
            "layers": len(searchable), "evaluations": int(statistics.median([first.n_evaluations,
                                                                             second.n_evaluations])),
            "seconds": statistics.median([t1, t2]),
            "order_stderr": float(np.nanmedian(np.r_[first.stderr, second.stderr, np.nan])),
            "batch_stderr": float(np.nanmedian(np.r_[first.batch_stderr, second.batch_stderr, np.nan])),
            "split_half_reliability": [spearman_brown(h) for h in halves], "regret": statistics.fmean(regrets),
            "overrides": overrides}


def table(rows: dict) -> str:
    lines = ["| configuration | ρ (group-centred) | policies agree | regret | evaluations | wall s | median stderr: "
             "orderings / batch | split-half reliability (seed 1, 2) |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for name, r in rows.items():
        rel = ", ".join(f"{x:.2f}" for x in r["split_half_reliability"])
        lines.append(f"| {name} | {r['rho']:.3f} | {r['agree']} of {r['layers']} | {r['regret']:.3f} | "
                     f"{r['evaluations']} | {r['seconds']:.0f} | {r['order_stderr']:.2g} / {r['batch_stderr']:.2g} | "
                     f"{rel} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    parser.add_argument("--only", nargs="*", default=None, help="configuration names to run (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    root = args.project.resolve()
    if not (root / "data/supernet/supernet.pt").is_file():
        raise SystemExit(f"error: {root} has no trained supernet; run `dvc repro supernet` there first")
    rows = {}
    for name, overrides in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        rows[name] = compare(root, overrides, args.seeds)
        print(f"{name}: ρ {rows[name]['rho']:.3f}, {rows[name]['agree']}/{rows[name]['layers']} layers, "
              f"{rows[name]['evaluations']} evaluations, {rows[name]['seconds']:.0f} s", flush=True)
    print(table(rows))
    if args.out:
        write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
