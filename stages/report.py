"""Stage ``report``: side-by-side table of every method (GBitOps, MB, top-1, Δ vs FP) and plots."""

from __future__ import annotations

from pathlib import Path

from smpq.artifacts import read_json, write_json, write_text
from stages.plots import accuracy_vs_bitops
from stages.session import parse_args, session


def table_markdown(rows: list[dict], fp_top1: float) -> str:
    lines = ["| method | policy | GBitOps | MB | top-1 (%) | Δ vs FP (pp) |", "|---|---|---:|---:|---:|---:|"]
    lines.append(f"| full precision | W32A32 | – | – | {100 * fp_top1:.2f} | 0.00 |")
    for r in rows:
        lines.append(f"| {r['method']} | {r['policy']} | {r['gbitops']:.4f} | {r['size_mb']:.4f} | "
                     f"{100 * r['top1']:.2f} | {100 * (r['top1'] - fp_top1):+.2f} |")
    return "\n".join(lines)


def run(params, *, pretrain_results: Path, select_results: Path, finetune_results: Path, out: Path) -> dict:
    fp_top1 = read_json(pretrain_results / "metrics.json")["fp_top1"]
    selection = read_json(select_results / "summary.json")
    rows = []
    for method in params.finetune.methods:
        metrics = read_json(finetune_results / method / "metrics.json")
        rows.append({**metrics, "budget_gbitops": selection[method]["budget_gbitops"]})
    budget = rows[0]["budget_gbitops"] if rows else None
    text = "\n\n".join([
        f"# {params.report.title}",
        f"Budget: {budget:.4f} GBitOps ({_budget_text(params)}); first/last layers at "
        f"W{params.quant.first_last.w_bits}A{params.quant.first_last.a_bits}. Top-1 on the `test` split.",
        table_markdown(rows, fp_top1),
        "![top-1 vs GBitOps](accuracy_vs_bitops.png)",
    ]) + "\n"
    write_text(out / "report.md", text)
    accuracy_vs_bitops(rows, fp_top1, out / "accuracy_vs_bitops.png", budget)
    metrics = {"fp_top1": fp_top1, **{f"{r['method']}_top1": r["top1"] for r in rows},
               **{f"{r['method']}_gbitops": r["gbitops"] for r in rows}}
    write_json(out / "metrics.json", metrics)
    return metrics


def _budget_text(params) -> str:
    b = params.select.budget
    form = f"avg_bits={b.avg_bits:g}" if b.avg_bits is not None else f"gbitops={b.gbitops:g}"
    return form + (f", size_mb={b.size_mb:g}" if b.size_mb is not None else "")


def main(argv: list[str] | None = None) -> None:
    args = parse_args("report", ["pretrain", "select", "finetune", "out"], argv)
    with session("report", args, sections=("report",)) as s:
        metrics = run(s.params, pretrain_results=args.pretrain, select_results=args.select,
                      finetune_results=args.finetune, out=args.out)
        s.tracker.log_metrics(metrics)
        s.tracker.log_artifact(args.out)


if __name__ == "__main__":
    main()
