"""Benchmark: does a short QAT rank policies like the full fine-tune does? (a prototype of a QAT-aware value)

Why (docs/shapley-game.md §6): the game values a coalition on the frozen supernet, before any QAT, and ranks
the 12 random policies of ``bench.alignment`` *against* their top-1 after QAT (Kendall τ −0.24): it charges
2-bit weights for rounding damage that QAT repairs. A value measured after a few QAT steps would see the
repair. Before building a game on it, this measures whether it carries the signal at all: for each policy of
``bench.alignment`` (same seed, same budget band) it runs the ``finetune`` stage's recipe for only ``--steps``
weight steps and records ``search_val`` top-1 and loss (the data a game may use), then gives Kendall τ against
the recorded top-1 after the full QAT (``--reference``, the ``top1`` of ``bench.alignment``'s JSON). The ceiling
is what a second full QAT with another fine-tune seed gives (``--ceiling``): no value can rank the policies
better than the full recipe agrees with itself.

    python -m bench.qat_proxy --project . --reference docs/results/alignment.json --steps 10 40 --ceiling --out DIR
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from scipy.stats import kendalltau

from bench.alignment import fine_tune_policies, random_policies
from pipelines.dag import stage_command
from smpq.artifacts import read_json, write_json
from smpq.config import load_params
from smpq.cost import CostTable
from stages.shapley_worker import STAGE, stage_inputs


def short_qat(params, paths, policies: dict, folder: Path) -> dict[str, dict]:
    """Each policy through the ``finetune`` stage with ``params``; search_val and test metrics after it."""
    record = {}
    for name, results in fine_tune_policies(params, paths, policies, folder).items():
        metrics, last = read_json(results / "metrics.json"), read_json(results / "history.json")[-1]
        record[name] = {"val_top1": last.get("val_top1"), "val_loss": last.get("val_loss"), "top1": metrics["top1"]}
        print(f"  {folder.name} {name}: val top-1 {record[name]['val_top1']}, test top-1 {metrics['top1']}",
              flush=True)
    return record


def taus(record: dict[str, dict], reference: dict[str, float]) -> dict[str, float]:
    """Kendall τ of each recorded quantity (loss negated: higher is better) against the reference top-1."""
    names = sorted(reference)
    signs = {"val_top1": 1.0, "val_loss": -1.0, "top1": 1.0}
    return {key: float(kendalltau([sign * record[n][key] for n in names], [reference[n] for n in names]).statistic)
            for key, sign in signs.items() if all(record[n].get(key) is not None for n in names)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.qat_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--reference", type=Path, required=True, help="bench.alignment JSON with 'top1'")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--ceiling", action="store_true", help="also the full QAT with finetune.seed = seed + 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    root = args.project.resolve()
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    base = {"tracking.enabled": False, "seed": args.seed}
    params = load_params(params_path, base)
    policies = random_policies(params, CostTable.load(paths.calibrate), len(read_json(args.reference)["top1"]),
                               args.seed)
    reference = read_json(args.reference)["top1"]
    report = {"reference": str(args.reference), "variants": {}}
    runs = {f"steps{n}": {"finetune.samples_per_epoch": n * params.finetune.batch_size, "finetune.epochs": 1}
            for n in args.steps}
    if args.ceiling:
        runs["full_qat_seed+1"] = {"finetune.seed": args.seed + 1}
    for name, overrides in runs.items():
        record = short_qat(load_params(params_path, base | overrides), paths, policies, args.out / name)
        report["variants"][name] = {"overrides": overrides, "record": record, "tau": taus(record, reference)}
        print(f"{name}: Kendall τ vs top-1 after the full QAT: {report['variants'][name]['tau']}", flush=True)
    write_json(args.out / "qat_proxy.json", report)
    return report


if __name__ == "__main__":
    main()
