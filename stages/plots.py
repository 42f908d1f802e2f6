"""PNG plots for DVC and MLflow (offline: DVC's HTML plots need a CDN, these images do not)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from smpq.artifacts import atomic_write, write_json  # noqa: E402
from stages.run_info import split_timings  # noqa: E402


def write_training_results(results: Path, metrics: Mapping, history: Sequence[Mapping[str, float]],
                           title: str, steps: Sequence[Mapping[str, float]] = ()) -> tuple[dict, dict]:
    """A training stage's ``metrics.json``, ``history.json`` (per epoch) and ``steps.json`` (per tenth of an
    epoch) and ``curves.png``; none holds a timing, so a rerun that reproduces the model rewrites them byte
    for byte. Returns (metrics, timings)."""
    history, timings = split_timings(list(history))
    write_json(results / "metrics.json", metrics)
    write_json(results / "history.json", history)
    write_json(results / "steps.json", list(steps))
    training_curves(history, results / "curves.png", title, steps)
    return dict(metrics), timings


def training_curves(history: Sequence[Mapping[str, float]], path: Path, title: str,
                    steps: Sequence[Mapping[str, float]] = ()) -> Path:
    """Loss and top-1 against epochs: train at every tenth of an epoch (when ``steps`` has them, else per
    epoch), validation per epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax_loss), ("top1", ax_acc)):
        for prefix, rows in (("train", steps or history), ("val", history)):
            values = [h.get(f"{prefix}_{key}") for h in rows]
            if all(v is not None for v in values) and values:
                ax.plot([h["epoch"] for h in rows], values, marker="o", markersize=3, label=prefix)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def accuracy_vs_bitops(rows: Sequence[Mapping], fp_top1: float | None, path: Path, budget_gbitops: float | None
                       ) -> Path:
    """Test top-1 against GBitOps, one point per method, with the budget as a vertical line."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row in rows:
        ax.scatter(row["gbitops"], 100 * row["top1"], s=40)
        ax.annotate(row["method"], (row["gbitops"], 100 * row["top1"]), textcoords="offset points", xytext=(5, 5))
    if fp_top1 is not None:
        ax.axhline(100 * fp_top1, color="grey", linestyle="--", label="full precision")
    if budget_gbitops is not None:
        ax.axvline(budget_gbitops, color="red", linestyle=":", label="budget")
    ax.set_xlabel("GBitOps")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    try:
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def shapley_convergence(evaluations: Sequence[int], trace, path: Path) -> Path:
    """Every player's running Shapley estimate against the value evaluations spent."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(evaluations), trace, linewidth=0.8, alpha=0.6)
    ax.set_xlabel("value-function evaluations")
    ax.set_ylabel("Shapley estimate")
    ax.set_title("Shapley estimates vs evaluations (one line per candidate)")
    return _save(fig, path)


def shapley_heatmap(players: Sequence[Mapping], path: Path) -> Path:
    """Layers × candidates (w2 … a8) coloured by Shapley value."""
    layers = list(dict.fromkeys(p["layer"] for p in players))
    columns = list(dict.fromkeys(f"{p['kind']}{p['bits']}" for p in players))
    grid = [[float("nan")] * len(columns) for _ in layers]
    for p in players:
        grid[layers.index(p["layer"])][columns.index(f"{p['kind']}{p['bits']}")] = p["value"]
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(columns), 1 + 0.4 * len(layers)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(layers)), layers)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label="Shapley value")
    ax.set_title("Shapley value per candidate")
    return _save(fig, path)


def shapley_vs_alpha(players: Sequence[Mapping], rho: float, path: Path) -> Path:
    """Each candidate's Shapley value against its α probability (what DMPQ would rank by)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, marker in (("w", "o"), ("a", "^")):
        chosen = [p for p in players if p["kind"] == kind]
        ax.scatter([p["alpha_probability"] for p in chosen], [p["value"] for p in chosen], marker=marker,
                   label="weights" if kind == "w" else "activations", alpha=0.7)
    ax.set_xlabel("α probability")
    ax.set_ylabel("Shapley value")
    ax.set_title(f"Shapley value vs α probability (Spearman ρ = {rho:.3f})")
    ax.legend()
    return _save(fig, path)
