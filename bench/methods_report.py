"""Tables and the plot of ``bench.methods``: per budget and method top-1 mean ± std, paired gaps with wins,
per-seed diagnostics and stage times, and top-1 vs GBitOps with error bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ("smpq", "dmpq", "hawq", "uniform")
ARGMAX = "dmpq_argmax"
PAIRS = (("smpq", "dmpq"), ("smpq", "uniform"), ("smpq", "hawq"), ("dmpq", "hawq"))  # paired top-1 differences


def _pm(mean: float, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * mean:.{digits}f} ± " + (f"{scale * std:.{digits}f}" if std is not None else "n/a")


def markdown(rows: list[dict], gaps: list[dict], seeds: list[dict]) -> str:
    lines = ["| budget | budget GBitOps | method | top-1 % (mean ± std) | GBitOps | MB | meets budget |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        budget = ("–", "–") if r["avg_bits"] is None else (r["avg_bits"], f"{r['budget_gbitops']:.5f}")
        lines.append(f"| {budget[0]} | {budget[1]} | {r['method']} | {_pm(r['top1_mean'], r['top1_std'])} | "
                     f"{r['gbitops_mean']:.5f} | {r['size_mb_mean']:.4f} | {_meets(r['meets_budget'])} |")
    lines += ["", gaps_markdown(gaps)]
    tags = list(seeds[0]["budgets"])
    lines += ["", "| seed | FP top-1 % | ρ(α, Shapley) | Shapley evals | "
              + " | ".join(f"layers smpq≠dmpq @ {t}" for t in tags) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(tags)]
    for s in seeds:
        lines.append(f"| {s['seed']} | {100 * s['fp_top1']:.2f} | {s['spearman_alpha_shapley']:.3f} | "
                     f"{s['shapley']['evaluations']} | " + " | ".join(str(len(s["budgets"][t]["differing_layers"]))
                                                                for t in tags) + " |")
    stages = list(dict.fromkeys(k for s in seeds for k in s["stage_seconds"]))  # a reused stage is absent: "–"
    lines += ["", "| seconds per stage | " + " | ".join(f"seed {s['seed']}" for s in seeds) + " | fastest |",
              "|---|" + "---:|" * (len(seeds) + 1)]
    for stage in [*stages, "total"]:
        values = [s["total_seconds"] if stage == "total" else s["stage_seconds"].get(stage) for s in seeds]
        ran = [v for v in values if v is not None]
        best = (sum(min(s["stage_seconds"].get(k, float("inf")) for s in seeds) for k in stages)
                if stage == "total" else min(ran))
        lines.append(f"| {stage} | " + " | ".join("–" if v is None else f"{v:.0f}" for v in values)
                     + f" | {best:.0f} |")
    lines += ["", "Layers where smpq and dmpq choose different bits:", ""]
    for s in seeds:
        for tag, b in s["budgets"].items():
            diffs = ", ".join(f"{k} ({v})" for k, v in b["differing_layers"].items()) or "none"
            lines.append(f"- seed {s['seed']}, {tag}: {diffs}")
    return "\n".join(lines)


def gaps_markdown(gaps: list[dict]) -> str:
    """One row per budget and method pair: the paired top-1 difference (pp) with its std, and the first's wins."""
    lines = ["| budget | pair | difference (pp, paired, mean ± std) | first wins | layers smpq≠dmpq |",
             "|---|---|---:|---:|---:|"]
    for g in gaps:
        for x, y in PAIRS:
            if f"{x}_minus_{y}" in g:
                lines.append(f"| {g['avg_bits']} | {x} − {y} | {_pm(*g[f'{x}_minus_{y}'])} | "
                             f"{g.get(f'{x}_wins_vs_{y}')} of {g.get('pairs')} | {g['differing_layers_mean']:.1f} |")
    return "\n".join(lines)


def _meets(value: bool | None) -> str:
    return "own BitOps" if value is None else ("yes" if value else "no")


def plot(rows: list[dict], path: Path) -> Path:
    """Top-1 vs GBitOps, error bars = std over seeds (both axes), one series per method."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in (*METHODS, ARGMAX):
        pts = [r for r in rows if r["method"] == method]
        ax.errorbar([r["gbitops_mean"] for r in pts], [100 * r["top1_mean"] for r in pts],
                    xerr=[r["gbitops_std"] or 0 for r in pts], yerr=[100 * (r["top1_std"] or 0) for r in pts],
                    marker="o", capsize=3, linestyle="-" if len(pts) > 1 else "none", label=method)
    ax.set_xlabel("GBitOps")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("top-1 vs GBitOps (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


