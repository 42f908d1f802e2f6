"""Benchmark: SMPQ vs DMPQ vs HAWQ vs uniform over seeds and budgets, each fine-tuned on the default pipeline.

Why: one seed and one budget cannot tell a better selection rule from noise. For every seed (``params.seed``:
it changes the splits, the FP and supernet initialisation and the Shapley permutations) the search stages
run once (everything ``select`` depends on: prepare → pretrain → calibrate → supernet → shapley, and
sensitivity; reused by every budget); for every budget (``select.budget.avg_bits``) ``select`` picks the
``smpq``, ``dmpq`` (iso-budget log p(α)), ``hawq`` (HAWQ-V3's Hessian sensitivity Ω, the same knapsack) and
``uniform`` policies and each is fine-tuned (QAT) and tested; ``dmpq_argmax`` (the raw α argmax, its own
BitOps, independent of the budget) is fine-tuned once per seed. Everything else is the project's
``params.yaml`` (SPEC §3.4).

Reported: per budget and method top-1 mean ± std over seeds, GBitOps, MB, paired differences smpq − dmpq,
smpq − uniform, smpq − hawq and dmpq − hawq; per seed the Spearman ρ between α probabilities and Shapley
values over all candidates and the layers where smpq and dmpq choose different bits; a PNG of top-1 vs
GBitOps with error bars; a JSON of every raw number (``--render`` re-summarises that JSON without training;
``--merge A B …`` joins the seeds of runs made apart, e.g. one process per seed, into one report).
Each seed runs in its own scratch copy of the project (``OUT/seed<n>``, ``bench.workspace``): ``dvc repro``
of the stages of ``dvc.yaml`` with the overridden ``params.yaml``, so the stages, paths and files are those
of the pipeline itself; ``--reuse`` starts a copy from an earlier run's outputs and ``dvc.lock``, and DVC
reruns only what the new params change.
Cost with three budgets on a 2-core x86_64 CPU, 2 torch threads, free cores (docs/RESULTS.md §1, §1b): about
5 minutes per seed with today's defaults (fastest stage times: prepare..supernet 141 s, shapley 50 s, select +
fine-tuning 86 s), plus a few seconds per stage for DVC and each stage's process start; with ``--reuse``
(shapley onward only) 136–141 s per seed. Shared cores make it several times slower.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import statistics
from collections import Counter
from pathlib import Path

import yaml
from scipy.stats import spearmanr

from bench.methods_report import ARGMAX, METHODS, PAIRS, markdown, plot
from bench.workspace import (
    SCRATCH,
    TINY,
    Workspace,
    default_params,
    make_copy,
    repro,
    reuse_outputs,
    timed,
    write_params,
)
from pipelines.dag import stage_order
from smpq.artifacts import read_json, write_json, write_text
from smpq.policy import Policy

BENCH = {"tracking.enabled": False, "finetune.methods": [*METHODS, ARGMAX]}  # no MLflow runs from benchmarks
SELECT = "select"  # the first stage that reads the budget: the search stages are all of its upstream


def parse_overrides(items: list[str]) -> dict:
    """``["shapley.batches=4"]`` -> ``{"shapley.batches": 4}`` (values parsed as YAML)."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, eq, _) in zip(items, pairs) if not eq]
    if bad:
        raise SystemExit(f"--set expects KEY=VALUE, got {bad}")
    return {key: yaml.safe_load(value) for key, _, value in pairs}


def parse_budget(spec) -> tuple[float, float | None]:
    """``"2.5"`` -> (2.5, None): avg_bits; ``"4+0.025"`` -> avg_bits 4 with a 0.025 MB weight-size cap."""
    bits, _, size = str(spec).partition("+")
    return float(bits), (float(size) if size else None)


def budget_tag(spec) -> str:
    bits, size = parse_budget(spec)
    return f"avg{bits:g}" + ("" if size is None else f"+{size:g}MB")


def run_tag(spec, ft_seed: int | None) -> str:
    """A (budget, fine-tune seed) pair: the unit of a paired comparison."""
    return budget_tag(spec) + ("" if ft_seed is None else f" ft{ft_seed}")


def finetune_stage(method: str) -> str:
    """The ``dvc.yaml`` foreach item that fine-tunes ``method``."""
    return f"finetune@{method}"


def spearman_alpha_shapley(ws: Workspace) -> float:
    """ρ between each candidate's α probability and its Shapley value (all players of the game)."""
    players = read_json(ws.data("shapley") / "shapley.json")["players"]
    return float(spearmanr([p["alpha_probability"] for p in players], [p["value"] for p in players]).statistic)


def differing_layers(ws: Workspace) -> dict[str, str]:
    """Layers where the current smpq and dmpq policies differ: ``{layer: "smpq W?A? / dmpq W?A?"}``."""
    folder = ws.data("select")
    smpq, dmpq = Policy.load(folder / "smpq.yaml"), Policy.load(folder / "dmpq.yaml")
    return {name: f"smpq {smpq[name]} / dmpq {dmpq[name]}" for name in smpq if smpq[name] != dmpq[name]}


def search_stages(ws: Workspace) -> list[str]:
    """The budget-independent stages, in order: everything ``select`` depends on (shapley, sensitivity, …)."""
    return stage_order(ws.root, SELECT)[:-1]


def run_budget(ws: Workspace, overrides: dict, spec, ft_seed: int | None, methods: tuple[str, ...], threads: int):
    """Select at one budget and fine-tune ``methods`` on it with QAT seed ``ft_seed`` (None: the run's seed);
    (per-budget result, seconds per stage that ran)."""
    avg_bits, size_mb = parse_budget(spec)
    write_params(ws, overrides | {"select.budget.avg_bits": avg_bits, "select.budget.gbitops": None,
                                  "select.budget.size_mb": size_mb, "finetune.seed": ft_seed})
    seconds = repro(ws, ["select", *map(finetune_stage, methods)], threads)
    selection = read_json(ws.result("select", "summary.json"))
    runs = {m: {**selection[m], **read_json(ws.result(finetune_stage(m))),
                "wall_seconds": seconds.get(finetune_stage(m))} for m in methods}
    return {"avg_bits": avg_bits, "size_mb": size_mb, "finetune_seed": ft_seed,
            "budget_gbitops": selection["uniform"]["budget_gbitops"], "methods": runs,
            "differing_layers": differing_layers(ws)}, seconds


def run_seed(overrides: dict, seed: int, budgets: list[str], out: Path, reuse: Path | None = None,
             threads: int = 2, ft_seeds: list[int | None] = (None,)) -> dict:
    """Search stages once (only those the params change, with ``reuse``), then every budget; the budget-
    independent argmax policy is fine-tuned once, on the first budget's selection."""
    overrides = overrides | {"seed": seed}
    ws = make_copy(out / f"seed{seed}", overrides)
    logging.getLogger("bench.methods").info("seed %d: search stages in %s", seed, ws.root)
    if reuse:
        reuse_outputs(Workspace(reuse / f"seed{seed}"), ws)
    stage_seconds = repro(ws, search_stages(ws), threads)
    per_budget, seconds = {}, {}
    runs = [(b, k) for b in budgets for k in ft_seeds]
    for i, (b, k) in enumerate(runs):
        per_budget[run_tag(b, k)], took = run_budget(ws, overrides, b, k, METHODS + ((ARGMAX,) if i == 0 else ()),
                                                     threads)
        seconds |= {f"{run_tag(b, k)} {stage}": s for stage, s in took.items()}
    first = run_tag(*runs[0])
    argmax = per_budget[first]["methods"].pop(ARGMAX)
    argmax_seconds = seconds.pop(f"{first} {finetune_stage(ARGMAX)}", 0.0)  # 0: DVC skipped it
    stage_seconds |= {"select+finetune (all budgets)": sum(seconds.values()), "finetune dmpq_argmax": argmax_seconds}
    return {"seed": seed, "fp_top1": read_json(ws.metrics("pretrain"))["fp"]["top1"],
            "spearman_alpha_shapley": spearman_alpha_shapley(ws),
            "shapley": read_json(ws.metrics("shapley"))["shapley"], "stage_seconds": stage_seconds,
            "total_seconds": sum(stage_seconds.values()), "budgets": per_budget, ARGMAX: argmax}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(seeds: list[dict], budgets: list[str], ft_seeds: list) -> list[dict]:
    """One row per (budget, method) plus the argmax row: mean ± std over seeds × fine-tune seeds of top-1,
    GBitOps and MB."""
    rows = []
    for b in budgets:
        for m in METHODS:
            runs = [s["budgets"][run_tag(b, k)]["methods"][m] for s in seeds for k in ft_seeds]
            rows.append(_row(budget_tag(b), m, runs, seeds[0]["budgets"][run_tag(b, ft_seeds[0])]["budget_gbitops"]))
    rows.append(_row(None, ARGMAX, [s[ARGMAX] for s in seeds], None) | {"meets_budget": None})
    return rows


def _row(avg_bits, method: str, runs: list[dict], budget_gbitops) -> dict:
    top1, top1_std = mean_std([r["top1"] for r in runs])
    return {"avg_bits": avg_bits, "budget_gbitops": budget_gbitops, "method": method, "top1_mean": top1,
            "top1_std": top1_std, "gbitops_mean": statistics.fmean(r["gbitops"] for r in runs),
            "gbitops_std": mean_std([r["gbitops"] for r in runs])[1],
            "size_mb_mean": statistics.fmean(r["size_mb"] for r in runs),
            "meets_budget": all(r["meets_budget"] for r in runs), "seeds": len(runs)}


def paired_gaps(seeds: list[dict], budgets: list[str], ft_seeds: list) -> list[dict]:
    """Per budget: the top-1 differences of ``PAIRS`` (smpq − dmpq, smpq − uniform, smpq − hawq, dmpq − hawq),
    paired by (seed, fine-tune seed): mean ± std, how many pairs the first method wins, how many layers differ."""
    gaps = []
    for b in budgets:
        pairs = [s["budgets"][run_tag(b, k)] for s in seeds for k in ft_seeds]
        top1 = {m: [r["methods"][m]["top1"] for r in pairs if m in r["methods"]] for m in METHODS}
        diffs = {(x, y): [p - q for p, q in zip(top1[x], top1[y])] for x, y in PAIRS
                 if len(top1[x]) == len(top1[y]) == len(pairs)}  # a run recorded before hawq has no hawq pairs
        gaps.append({"avg_bits": budget_tag(b), **{f"{x}_minus_{y}": mean_std(d) for (x, y), d in diffs.items()},
                     **{f"{x}_wins_vs_{y}": sum(v > 0 for v in d) for (x, y), d in diffs.items()},
                     "pairs": len(pairs),
                     "differing_layers_mean": statistics.fmean(len(r["differing_layers"]) for r in pairs)})
    return gaps


def finetune_spread(seeds: list[dict], budgets: list[str], ft_seeds: list) -> float | None:
    """Pooled standard deviation of top-1 over fine-tune seeds (same policy, same everything else), over the
    methods fine-tuned with every fine-tune seed."""
    if len(ft_seeds) < 2:
        return None
    runs = [[s["budgets"][run_tag(b, k)]["methods"] for k in ft_seeds] for s in seeds for b in budgets]
    variances = [statistics.variance([r[m]["top1"] for r in rs]) for rs in runs for m in METHODS
                 if all(m in r for r in rs)]
    return statistics.fmean(variances) ** 0.5


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", default=["2.5", "3", "4"],
                        help="select.budget.avg_bits, or AVG+MB for a weight-size cap too (e.g. 4+0.025)")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=None,
                        help="QAT seeds (finetune.seed) run for every budget: paired over seed x fine-tune seed")
    parser.add_argument("--tiny", action="store_true", help="tiny data and epochs (smoke test, not a result)")
    parser.add_argument("--out", type=Path, default=SCRATCH / "methods")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each stage process")
    parser.add_argument("--render", action="store_true", help="only re-summarise OUT/methods.json (no training)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="RUN",
                        help="only join the seeds of earlier runs' OUT folders (same budgets and fine-tune seeds) "
                             "into one report in --out (no training)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier run's OUT: start each seed from its outputs and dvc.lock; DVC reruns "
                             "only the stages the new params change (e.g. shapley onward for shapley params)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides, e.g. shapley.estimator=owen (YAML values)")
    args = parser.parse_args(argv)
    if args.render:
        return render(read_json(args.out / "methods.json"), args.out)
    if args.merge:
        return render(merge(args.merge), args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = BENCH | (TINY if args.tiny else {}) | parse_overrides(args.set)
    default_params(overrides)  # a bad key or value stops here, before any copy or training
    ft_seeds = args.finetune_seeds or [None]
    seeds, seconds = timed(lambda: [run_seed(overrides, s, args.budgets, args.out, args.reuse, args.threads,
                                             ft_seeds) for s in args.seeds])
    report = {"command": "python -m bench.methods " + " ".join(argv if argv is not None else _argv()),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "threads": args.threads,
              "tiny": args.tiny, "wall_seconds": seconds, "budgets": args.budgets, "finetune_seeds": ft_seeds,
              "seeds": seeds}
    return render(report, args.out)


def merge(runs: list[Path]) -> dict:
    """One raw report from the ``methods.json`` of several runs of one protocol (same budgets, fine-tune seeds,
    tiny or not, machine), each with other seeds: so seeds can run as separate processes side by side."""
    reports = [read_json(run / "methods.json") for run in runs]
    for run, report in zip(runs[1:], reports[1:]):
        for key in ("budgets", "finetune_seeds", "tiny", "machine"):
            if report.get(key) != reports[0].get(key):
                raise ValueError(f"{run}: {key} {report.get(key)!r} differs from {runs[0]}'s "
                                 f"{reports[0].get(key)!r}; only runs of one protocol merge")
    seeds = sorted((s for r in reports for s in r["seeds"]), key=lambda s: s["seed"])
    repeated = sorted(seed for seed, n in Counter(s["seed"] for s in seeds).items() if n > 1)
    if repeated:
        raise ValueError(f"seed(s) {repeated} appear in more than one merged run; merge runs of distinct seeds")
    parts = [{k: r.get(k) for k in ("command", "date", "threads", "wall_seconds")} for r in reports]
    return {**{k: reports[0].get(k) for k in ("machine", "tiny", "budgets", "finetune_seeds")},
            "command": "python -m bench.methods --merge " + " ".join(map(str, runs)), "parts": parts,
            "date": max(r["date"] for r in reports), "threads": reports[0].get("threads"),
            "wall_seconds": sum(r["wall_seconds"] for r in reports), "seeds": seeds}


def render(report: dict, out: Path) -> dict:
    """Summary rows, paired gaps, markdown, plot and JSON from the raw per-seed results."""
    budgets, ft_seeds, seeds = report["budgets"], report.get("finetune_seeds", [None]), report["seeds"]
    report |= {"summary": summarise(seeds, budgets, ft_seeds), "paired_gaps": paired_gaps(seeds, budgets, ft_seeds),
               "finetune_spread": finetune_spread(seeds, budgets, ft_seeds)}
    table = markdown(report["summary"], report["paired_gaps"], seeds)
    if report["finetune_spread"] is not None:
        spread = 100 * report["finetune_spread"]
        table += f"\n\nFine-tune seed spread (pooled std of top-1 over QAT seeds): {spread:.2f} pp"
    write_json(out / "methods.json", report)
    write_text(out / "methods.md", table + "\n")
    plot(report["summary"], out / "top1_vs_gbitops.png")
    print(table)
    print(f"\n{len(seeds)} seed(s) x {len(budgets)} budget(s) in {report['wall_seconds']:.0f} s; raw results: "
          f"{out / 'methods.json'}")
    return report


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
