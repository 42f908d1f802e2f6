"""Benchmark: re-select the ``smpq`` policy of an earlier ``bench.methods`` run under another game, fine-tune
it with the same recipe and seeds, and compare it paired with that run's ``dmpq`` (and its own ``smpq``).

Why: a game option (e.g. ``shapley.bn_recalibration``) changes only the ``shapley`` stage, yet a code change
makes ``bench.methods`` rerun every stage of its copies. This reuses each seed's trained ``pretrain``,
``calibrate`` and ``supernet`` outputs read only, and first re-fine-tunes the recorded ``smpq`` policy of one
run as a control: its top-1 must equal the recorded one bit for bit, or the pairing is void (machine or code
differs) and the bench stops.

    python -m bench.game_variant --methods /tmp/smpq_bench/methods_wg --set bn_recalibration=8 --out DIR
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

import torch
import yaml

from pipelines.dag import stage_command
from smpq.artifacts import read_json, write_json
from smpq.config import load_params
from smpq.cost import CostTable
from smpq.policy import Policy
from smpq.select import policy_report, select_policy
from smpq.shapley.estimate import shapley_values
from stages import finetune
from stages.select import selection_problem, shapley_scores
from stages.shapley_worker import STAGE, build_game, stage_inputs

log = logging.getLogger("bench.game_variant")


def scores(params, paths) -> dict:
    """The ``shapley`` stage's values under ``params`` (same estimator call), keyed like ``shapley.json``."""
    g, cfg = build_game(params, paths), params.shapley
    result = shapley_values(g.value_fn, len(g.players), seed=params.seed, max_permutations=cfg.max_permutations,
                            tolerance=cfg.tolerance, groups=g.groups, **cfg.method)
    return shapley_scores({"players": [{"layer": p.layer, "kind": p.kind, "bits": p.bits, "value": float(v)}
                                       for p, v in zip(g.players, result.values)]})


def qat(params, paths, policy: Policy, name: str, out: Path) -> float:
    """Top-1 on ``test`` after the ``finetune`` stage's QAT of ``policy`` (kept across reruns of the bench)."""
    results = out / "finetune" / name
    if not (results / "metrics.json").exists():
        policy.save(out / "policies" / name / "policy.yaml")
        finetune.run(params, "policy", prepared_dir=paths.prepared, pretrain_dir=paths.pretrain,
                     calibrate_dir=paths.calibrate, select_dir=out / "policies" / name, out=out / "models" / name,
                     results=results)
    return read_json(results / "metrics.json")["top1"]


def choose(params, paths, values: dict) -> tuple[Policy, str, dict]:
    """The ``select`` stage's ``smpq`` rule: (policy, its label, its cost report)."""
    table = CostTable.load(paths.calibrate)
    problem = selection_problem(params, table)
    policy = select_policy(values, **problem)
    return policy, policy.label(exclude=(table.first, table.last)), policy_report(table, policy, problem["budget"])


def budget_params(params_path: Path, base: dict, run: dict):
    return load_params(params_path, base | {"select.budget.avg_bits": run["avg_bits"], "select.budget.gbitops": None,
                                            "select.budget.size_mb": run["size_mb"],
                                            "finetune.seed": run["finetune_seed"]})


def control(recorded: dict, ws: Path, game: dict, out: Path) -> dict:
    """Re-select the recorded ``smpq`` policy of the seed's first run from its ``shapley.json`` and QAT it again:
    the same policy and the same top-1 prove the pairing (same machine, same fine-tune code)."""
    params_path, paths = stage_inputs(stage_command(ws, STAGE), ws)
    tag, run = next(iter(recorded["budgets"].items()))
    params = budget_params(params_path, {"tracking.enabled": False, "seed": recorded["seed"]} | game, run)
    policy, label, _ = choose(params, paths, shapley_scores(read_json(paths.out / "shapley.json")))
    top1 = qat(params, paths, policy, f"seed{recorded['seed']}-{tag}-control", out)
    return {"run": tag, "policy_matches": label == run["methods"]["smpq"]["policy"], "top1": top1,
            "recorded_top1": run["methods"]["smpq"]["top1"]}


def run_seed(recorded: dict, ws: Path, game: dict, out: Path) -> dict:
    """The variant's ``smpq`` policy at every recorded (budget, fine-tune seed) run, beside the recorded ones."""
    params_path, paths = stage_inputs(stage_command(ws, STAGE), ws)
    base = {"tracking.enabled": False, "seed": recorded["seed"]} | game  # also fills keys newer than the run
    values = scores(load_params(params_path, base), paths)
    rows = {}
    for tag, run in recorded["budgets"].items():
        params = budget_params(params_path, base, run)
        policy, label, report = choose(params, paths, values)
        top1 = qat(params, paths, policy, f"seed{recorded['seed']}-{tag}", out)
        rows[tag] = {"policy": label, "gbitops": report["gbitops"], "top1": top1,
                     "dmpq_top1": run["methods"]["dmpq"]["top1"], "smpq_top1": run["methods"]["smpq"]["top1"],
                     "same_as_smpq": label == run["methods"]["smpq"]["policy"]}
        print(f"  seed {recorded['seed']} {tag}: variant {label} {100 * top1:.2f} % | recorded smpq "
              f"{100 * rows[tag]['smpq_top1']:.2f} %, dmpq {100 * rows[tag]['dmpq_top1']:.2f} %", flush=True)
    return rows


def paired(rows: list[dict], key: str) -> str:
    gaps = [100 * (r["top1"] - r[key]) for r in rows]
    std = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
    return f"{statistics.fmean(gaps):+.2f} ± {std:.2f} pp ({sum(g > 0 for g in gaps)}/{len(gaps)} wins)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.game_variant", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", type=Path, required=True, help="output folder of an earlier bench.methods")
    parser.add_argument("--set", nargs="+", required=True, metavar="KEY=VALUE", help="shapley section overrides")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    game = {f"shapley.{k}": yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    recorded = read_json(args.methods / "methods.json")
    first = recorded["seeds"][0]
    check = control(first, args.methods / f"seed{first['seed']}", game, args.out)
    print(f"control (seed {first['seed']} {check['run']}): policy matches {check['policy_matches']}, top-1 "
          f"{100 * check['top1']:.2f} % vs recorded {100 * check['recorded_top1']:.2f} %", flush=True)
    if not check["policy_matches"] or check["top1"] != check["recorded_top1"]:
        raise SystemExit("error: the recorded smpq run does not reproduce here; a paired comparison is void")
    seeds = {s["seed"]: run_seed(s, args.methods / f"seed{s['seed']}", game, args.out) for s in recorded["seeds"]}
    rows = [row for runs in seeds.values() for row in runs.values()]
    budgets = sorted({tag.split()[0] for runs in seeds.values() for tag in runs})
    summary = {b: {"vs_dmpq": paired([r for s in seeds.values() for t, r in s.items() if t.startswith(b)], "dmpq_top1"),
                   "vs_smpq": paired([r for s in seeds.values() for t, r in s.items() if t.startswith(b)], "smpq_top1")}
               for b in budgets}
    for b, line in summary.items():
        print(f"{b}: variant − dmpq {line['vs_dmpq']}; variant − recorded smpq {line['vs_smpq']}")
    print(f"all: variant − dmpq {paired(rows, 'dmpq_top1')}; variant − recorded smpq {paired(rows, 'smpq_top1')}")
    report = {"game": game, "methods": str(args.methods), "control": check, "seeds": seeds, "summary": summary}
    write_json(args.out / "game_variant.json", report)
    return report


if __name__ == "__main__":
    main()
