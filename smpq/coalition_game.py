"""The Shapley game on a trained supernet (SPEC §3.3): v(S) = accuracy of the coalition-masked supernet.

Players are the supernet's ``(layer, kind, bits)`` candidates in ``Supernet.players()`` order. The value
is measured on one fixed batch (never ``test``) in eval mode without gradients; the supernet should be
frozen first (``Supernet.freeze``) so each evaluation costs about one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

VALUES = ("top1", "neg_loss")


def supernet_game(supernet: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  value: str = "top1") -> Callable[[np.ndarray], float]:
    """``value_fn(mask) -> float``: top-1 accuracy in [0, 1], or minus the mean cross-entropy."""
    if value not in VALUES:
        raise ValueError(f"unknown game value {value!r}; allowed: {', '.join(VALUES)}")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"the value batch needs matching, non-empty images and labels "
                         f"(got {len(images)} images, {len(labels)} labels)")

    @torch.no_grad()
    def value_fn(mask: np.ndarray) -> float:
        supernet.eval()
        with supernet.coalition(mask):
            logits = supernet(images)
        if value == "top1":
            return float((logits.argmax(dim=1) == labels).float().mean())
        return -float(nn.functional.cross_entropy(logits, labels))

    return value_fn
