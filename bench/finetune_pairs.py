"""Benchmark report: a ``bench.methods`` run's paired differences, with fine-tune seeds from ``bench.qat_stability``.

Why (issue 11): on ``mobilenet_v2`` a ``bench.methods`` seed costs hours on a 2-core CPU, and each fine-tune seed
re-runs every method and the α argmax. ``bench.qat_stability --policy`` fine-tunes a project's selected
policies (``data/select/*.yaml``) with further fine-tune seeds through the same ``finetune`` stage code; this
joins those runs to the ``bench.methods`` report as more (seed, fine-tune seed) pairs and prints the paired
differences (smpq − dmpq, smpq − uniform, …) and the fine-tune seed spread, as ``bench.methods`` computes them.
Only methods fine-tuned with every fine-tune seed are paired. A run with one budget only: the project's
selection is that budget's.

    python -m bench.finetune_pairs --methods OUT --extra 0=QAT_DIR0/qat_stability.json 1=… --out FILE.json
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from bench.methods import finetune_spread, paired_gaps, run_tag
from bench.methods_report import PAIRS
from smpq.artifacts import read_json, write_json
from smpq.errors import ArtifactError

RECIPE, AS_TRAINED = "base", "0"  # qat_stability's default recipe; its scores with the running BN statistics


def parse_extra(text: str) -> tuple[int, Path]:
    """``SEED=FILE`` → (seed, a ``bench.qat_stability`` JSON of that seed's project)."""
    seed, sep, file = text.partition("=")
    if not (seed.isdigit() and sep and file):
        raise SystemExit(f"error: --extra {text!r}: expected SEED=FILE (e.g. 1=/tmp/qat_s1/qat_stability.json)")
    return int(seed), Path(file)


def join(report: dict, extras: dict[int, dict]) -> tuple[list[dict], list]:
    """The report's seed records with each extra's fine-tune seeds added as runs of the report's one budget;
    (seeds, fine-tune seeds present for every seed)."""
    if len(report["budgets"]) != 1:
        raise SystemExit(f"error: --methods has budgets {report['budgets']}; only a one-budget run joins")
    budget, known = report["budgets"][0], report.get("finetune_seeds", [None])
    seeds = copy.deepcopy(report["seeds"])
    missing = sorted(set(extras) - {s["seed"] for s in seeds})
    if missing:
        raise SystemExit(f"error: --extra seed(s) {missing} are not in the --methods run")
    added = None
    for record in seeds:
        if record["seed"] not in extras:
            raise SystemExit(f"error: seed {record['seed']} of the --methods run has no --extra")
        base = record["budgets"][run_tag(budget, known[0])]
        rows = extras[record["seed"]].get("recipes", {}).get(RECIPE, {}).get("rows", {})
        if AS_TRAINED not in rows:
            raise SystemExit(f"error: seed {record['seed']}'s --extra has no '{RECIPE}' recipe scored as trained; "
                             "pass the qat_stability.json of a run with the default recipe")
        top1 = rows[AS_TRAINED]["top1"]
        ft_seeds = sorted({int(k) for runs in top1.values() for k in runs} - set(known))
        if added is not None and ft_seeds != added:
            raise SystemExit(f"error: seed {record['seed']}'s --extra has fine-tune seeds {ft_seeds}, not {added}")
        added = ft_seeds
        for k in ft_seeds:
            record["budgets"][run_tag(budget, k)] = {
                **base, "finetune_seed": k,
                "methods": {m: {"top1": runs[str(k)]} for m, runs in top1.items() if str(k) in runs}}
    return seeds, [*known, *(added or [])]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune_pairs", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", type=Path, required=True, help="a bench.methods OUT folder (one budget)")
    parser.add_argument("--extra", nargs="+", required=True, metavar="SEED=FILE")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        extras = {seed: read_json(file) for seed, file in map(parse_extra, args.extra)}
        report = read_json(args.methods / "methods.json")
    except ArtifactError as err:
        raise SystemExit(f"error: {err}") from None
    seeds, ft_seeds = join(report, extras)
    budgets = report["budgets"]
    result = {"methods": str(args.methods), "extra": args.extra, "finetune_seeds": ft_seeds,
              "paired_gaps": paired_gaps(seeds, budgets, ft_seeds),
              "finetune_spread": finetune_spread(seeds, budgets, ft_seeds)}
    for gap in result["paired_gaps"]:
        for x, y in PAIRS:
            if f"{x}_minus_{y}" in gap:
                mean, std = gap[f"{x}_minus_{y}"]
                std_text = "n/a" if std is None else f"{100 * std:.2f}"
                print(f"{gap['avg_bits']} {x} − {y}: {100 * mean:+.2f} ± {std_text} pp, {x} wins "
                      f"{gap[f'{x}_wins_vs_{y}']} of {gap['pairs']}")
    if result["finetune_spread"] is not None:
        print(f"fine-tune seed spread (pooled std over {ft_seeds}): {100 * result['finetune_spread']:.2f} pp")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
