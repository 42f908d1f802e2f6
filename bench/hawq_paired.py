"""Benchmark: the ``hawq`` policy on the seeds of an earlier ``bench.methods`` run, fine-tuned with the same recipe
and fine-tune seeds, paired with that run's recorded ``smpq``, ``dmpq`` and ``uniform``.

Why: ``hawq`` needs only the ``pretrain`` and ``calibrate`` outputs, yet any code change makes ``bench.methods``
rerun every stage of its copies (pretraining dominates on a shared 2-core machine). This reads each seed's
trained outputs read only, runs the ``sensitivity`` stage's computation and the ``select`` stage's ``hawq`` rule
on them, and fine-tunes the policy with the ``finetune`` stage. It first re-fine-tunes the recorded ``smpq``
policy of the first run as a control (``bench.game_variant.control``): its top-1 must equal the recorded one
bit for bit, or the pairing is void and the bench stops. ``bench.methods`` itself runs ``hawq`` beside the
others when run from scratch.

    python -m bench.hawq_paired --methods /tmp/smpq_bench/methods_wg --budgets 2.5 --out DIR
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch
import yaml

from bench.game_variant import budget_params, choose, control, qat
from bench.methods import budget_tag
from bench.workspace import default_params
from pipelines.dag import stage_command
from smpq.artifacts import read_json, write_json
from smpq.config import as_flat_dict
from smpq.sensitivity import SENSITIVITY_FILE
from stages import sensitivity
from stages.run_info import flatten
from stages.select import hawq_scores
from stages.shapley_worker import STAGE, stage_inputs

OTHERS = ("smpq", "dmpq", "uniform")


def newer_keys(params_path: Path) -> dict:
    """The project's defaults of the keys a recorded run's params file lacks (added after it: ``hawq``,
    ``runtime``, ``shapley.bn_recalibration``, …), as dotted keys; each default is the behaviour the run had."""
    recorded = set(flatten(yaml.safe_load(params_path.read_text())))
    return {k: v for k, v in as_flat_dict(default_params()).items() if k not in recorded}


def run_seed(recorded: dict, ws: Path, budgets: list[str], out: Path) -> dict:
    """Sensitivity once per seed, then the ``hawq`` policy of every recorded run at ``budgets``, fine-tuned."""
    params_path, paths = stage_inputs(stage_command(ws, STAGE), ws)
    base = {**newer_keys(params_path), "tracking.enabled": False, "seed": recorded["seed"]}
    folder = out / f"seed{recorded['seed']}"
    start = time.perf_counter()
    metrics, _ = sensitivity.run(budget_params(params_path, base, next(iter(recorded["budgets"].values()))),
                                 prepared_dir=paths.prepared, pretrain_dir=paths.pretrain,
                                 calibrate_dir=paths.calibrate, out=folder / "sensitivity", results=folder / "results")
    cost = {"seconds": time.perf_counter() - start, **metrics["sensitivity"]}
    values = hawq_scores(read_json(folder / "sensitivity" / SENSITIVITY_FILE))
    rows = {}
    for tag, run in recorded["budgets"].items():
        if tag.split()[0] not in {budget_tag(b) for b in budgets}:
            continue
        params = budget_params(params_path, base, run)
        policy, label, report = choose(params, paths, values)  # select_policy on −Ω: the stage's hawq rule
        top1 = qat(params, paths, policy, f"seed{recorded['seed']}-{tag}-hawq", out)
        rows[tag] = {"policy": label, "gbitops": report["gbitops"], "top1": top1,
                     **{f"{m}_top1": run["methods"][m]["top1"] for m in OTHERS}}
        print(f"  seed {recorded['seed']} {tag}: hawq {label} {100 * top1:.2f} % | recorded "
              + ", ".join(f"{m} {100 * rows[tag][f'{m}_top1']:.2f} %" for m in OTHERS), flush=True)
    return {"sensitivity": cost, "runs": rows}


def paired(rows: list[dict], first: str, second: str) -> dict:
    """``first − second`` top-1 in pp over the pairs: mean, std, wins of ``first``."""
    gaps = [100 * (r[first] - r[second]) for r in rows]
    return {"mean": statistics.fmean(gaps), "std": statistics.stdev(gaps) if len(gaps) > 1 else None,
            "wins": sum(g > 0 for g in gaps), "pairs": len(gaps)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.hawq_paired", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", type=Path, required=True, help="output folder of an earlier bench.methods")
    parser.add_argument("--budgets", nargs="+", default=["2.5"], help="recorded budgets (select.budget.avg_bits)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    recorded = read_json(args.methods / "methods.json")
    first = recorded["seeds"][0]
    ws = args.methods / f"seed{first['seed']}"
    check = control(first, ws, newer_keys(stage_inputs(stage_command(ws, STAGE), ws)[0]), args.out)
    print(f"control (seed {first['seed']} {check['run']}): policy matches {check['policy_matches']}, top-1 "
          f"{100 * check['top1']:.2f} % vs recorded {100 * check['recorded_top1']:.2f} %", flush=True)
    if not check["policy_matches"] or check["top1"] != check["recorded_top1"]:
        raise SystemExit("error: the recorded smpq run does not reproduce here; a paired comparison is void")
    seeds = {}
    for s in recorded["seeds"]:
        seeds[s["seed"]] = run_seed(s, args.methods / f"seed{s['seed']}", args.budgets, args.out)
        write_json(args.out / "hawq_paired.json", {"methods": str(args.methods), "control": check, "seeds": seeds})
    rows = [row for s in seeds.values() for row in s["runs"].values()]
    gaps = {f"{m}_minus_hawq": paired(rows, f"{m}_top1", "top1") for m in OTHERS}
    by_budget = {}
    for budget in sorted({tag.split()[0] for s in seeds.values() for tag in s["runs"]}):
        chosen = [row for s in seeds.values() for tag, row in s["runs"].items() if tag.split()[0] == budget]
        by_budget[budget] = {f"{m}_minus_hawq": paired(chosen, f"{m}_top1", "top1") for m in OTHERS}
    for budget, budget_gaps in by_budget.items():
        for name, g in budget_gaps.items():
            std = "n/a" if g["std"] is None else f"{g['std']:.2f}"
            print(f"{budget}: {name.replace('_minus_', ' − ')}: {g['mean']:+.2f} ± {std} pp "
                  f"({g['wins']}/{g['pairs']} wins)")
    report = {"methods": str(args.methods), "control": check, "seeds": seeds, "paired": gaps,
              "paired_by_budget": by_budget}
    write_json(args.out / "hawq_paired.json", report)
    return report


if __name__ == "__main__":
    main()
