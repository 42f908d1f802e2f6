"""PNG plots for DVC and MLflow (offline: DVC's HTML plots need a CDN, these images do not)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from smpq.artifacts import atomic_write  # noqa: E402


def training_curves(history: Sequence[Mapping[str, float]], path: Path, title: str) -> Path:
    """Loss and top-1 per epoch (train and, when present, validation)."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax_loss), ("top1", ax_acc)):
        for prefix in ("train", "val"):
            values = [h.get(f"{prefix}_{key}") for h in history]
            if all(v is not None for v in values) and values:
                ax.plot(epochs, values, marker="o", label=prefix)
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
