"""Stage ``report``: side-by-side table of every method (GBitOps, MB priced and packed, ONNX MB, top-1 in PyTorch
and onnxruntime, Δ vs FP) and plots."""

from __future__ import annotations

from pathlib import Path

from scipy.stats import spearmanr

from smpq.artifacts import read_json, write_json, write_text
from stages.machine import machine
from stages.plots import accuracy_vs_bitops, shapley_vs_alpha
from stages.report_html import markdown_to_html
from stages.run_info import budget_label, record_summary
from stages.session import parse_args, session


def table_markdown(rows: list[dict], fp_top1: float) -> str:
    lines = ["| method | policy | GBitOps | budget slack | MB | packed MB | ONNX MB | top-1 (%) | "
             "top-1 onnxruntime (%) | Δ vs FP (pp) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| full precision | W32A32 | – | – | – | – | – | {100 * fp_top1:.2f} | – | 0.00 |"]
    for r in rows:
        slack = f"{r['slack']:+.4f}" + ("" if r["meets_budget"] else " (over)")
        lines.append(f"| {r['method']} | {r['policy']} | {r['gbitops']:.4f} | {slack} | {r['size_mb']:.4f} | "
                     f"{r['packed_mb']:.4f} | {r['onnx_mb']:.4f} | {100 * r['top1']:.2f} | "
                     f"{100 * r['top1_onnx']:.2f} | {100 * (r['top1'] - fp_top1):+.2f} |")
    return "\n".join(lines)


def shapley_markdown(shapley: dict) -> str:
    """Each candidate's value ± its standard error (orderings and batch combined), and the run's reliability."""
    totals, players = shapley["totals"], shapley["players"]
    bits = sorted({p["bits"] for p in players})
    cells: dict[tuple[str, str], dict[int, str]] = {}
    for p in players:
        errors = [e for e in (p["stderr"], p.get("batch_stderr")) if e is not None]
        error = f" ± {sum(e * e for e in errors) ** 0.5:.2g}" if errors else ""
        cells.setdefault((p["layer"], p["kind"]), {})[p["bits"]] = f"{p['value']:+.4f}{error}"
    lines = ["| layer | kind | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|---|" + "---:|" * len(bits)]
    lines += [f"| {layer} | {kind} | " + " | ".join(row.get(b, "–") for b in bits) + " |"
              for (layer, kind), row in cells.items()]
    reliability = totals.get("reliability")
    summary = (f"Shapley values (`{totals.get('estimator', 'permutation')}` estimator, value "
               f"`{totals['value']}`, {totals['evaluations']} evaluations): split-half rank agreement "
               f"ρ = {_number(totals.get('split_half_rho'))}, estimated reliability of the full estimate "
               f"{_number(reliability)} (group-centred Spearman; SPEC §3.3 asks ≥ 0.8 between two seeds).")
    return summary + "\n\n" + "\n".join(lines)


def _exported(folder: Path) -> dict:
    """Packed MB, ONNX MB and onnxruntime top-1 of one method's export (stages/export.py)."""
    metrics = read_json(folder / "metrics.json")
    return {k: metrics[k] for k in ("packed_mb", "onnx_mb", "top1_onnx")}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run(params, *, pretrain_results: Path, select_results: Path, finetune_results: Path, export_results: Path,
        shapley_dir: Path, out: Path, machine: str = "") -> dict:
    fp_top1 = read_json(pretrain_results / "metrics.json")["fp"]["top1"]
    selection = read_json(select_results / "summary.json")
    rows = [{**selection[m], **_exported(export_results / m), **read_json(finetune_results / m / "metrics.json")}
            for m in params.finetune.methods]
    budget = selection["uniform"]["budget_gbitops"]
    shapley = read_json(shapley_dir / "shapley.json")
    players = shapley["players"]
    rho = float(spearmanr([p["alpha_probability"] for p in players], [p["value"] for p in players]).statistic)
    text = "\n\n".join([
        f"# {params.report.title}",
        f"Budget: {budget:.4f} GBitOps ({budget_label(params)}); first/last layers at "
        f"W{params.quant.first_last.w_bits}A{params.quant.first_last.a_bits}. Top-1 on the `test` split; "
        "slack = budget − used GBitOps; MB as the cost model prices it, packed MB as the export "
        "writes it (weights and biases; docs/export.md)." + (f" Machine: {machine}." if machine else ""),
        table_markdown(rows, fp_top1),
        "![top-1 vs GBitOps](accuracy_vs_bitops.png)",
        f"Spearman correlation between α probability and Shapley value over {len(players)} candidates: "
        f"ρ = {rho:.3f}.",
        "![Shapley vs α](shapley_vs_alpha.png)",
        shapley_markdown(shapley),
    ]) + "\n"
    write_text(out / "report.md", text)
    accuracy_vs_bitops(rows, fp_top1, out / "accuracy_vs_bitops.png", budget)
    shapley_vs_alpha(players, rho, out / "shapley_vs_alpha.png")
    write_text(out / "report.html", markdown_to_html(text, out))  # for the MLflow preview (images inline)
    # The DVC summary stays within 120 columns (`dvc metrics show`): the budget and each method's top-1. MLflow
    # gets more (names: stages/run_info.py): onnxruntime top-1 and packed MB (also results/export/<method>/), ρ(α).
    summary = {"budget": {"gbitops": budget}, **{r["method"]: {"top1": r["top1"]} for r in rows}}
    write_json(out / "metrics.json", summary)
    return {**summary, "shapley": {"alpha_spearman": rho},
            **{r["method"]: {k: r[k] for k in ("top1", "top1_onnx", "packed_mb")} for r in rows}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args("report", ["pretrain", "select", "finetune", "export", "shapley", "out"], argv)
    with session("report", args, sections=("report",)) as s:
        metrics = run(s.params, pretrain_results=args.pretrain, select_results=args.select,
                      finetune_results=args.finetune, export_results=args.export, shapley_dir=args.shapley,
                      out=args.out, machine=machine(s.params.runtime.cpu_kernels))
        s.record(metrics, args.out)
        costs = {m: {k: v[k] for k in ("gbitops", "size_mb", "slack")}
                 for m, v in read_json(args.select / "summary.json").items()}
        summary = {**read_json(args.pretrain / "metrics.json"), **metrics,
                   **{m: {**metrics.get(m, {}), **cost} for m, cost in costs.items()}}
        record_summary(s.tracker, summary, (args.out, "report"))  # ends up as fp.top1, smpq.top1, smpq.gbitops…


if __name__ == "__main__":
    main()
