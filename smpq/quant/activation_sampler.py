"""Bounded, seeded uniform subsample of each layer's input values, used by ``calibrate``.

Bottom-k sampling: every observed value gets an i.i.d. uniform key and the ``max_samples`` values with
the smallest keys are kept, which is a uniform sample without replacement over *all* values seen so
far, whatever the batch sizes; memory stays O(max_samples + one batch). The running minimum covers
every value, not just the kept ones, so signedness is not missed by subsampling.
"""

from __future__ import annotations

import torch


class ActivationSampler:
    """Per-layer reservoir of at most ``max_samples`` float32 values on the CPU."""

    def __init__(self, max_samples: int, seed: int) -> None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_activation_samples must be a positive integer, got {max_samples!r}")
        self.max_samples = max_samples
        self._generator = torch.Generator().manual_seed(seed)
        self._values: dict[str, torch.Tensor] = {}
        self._keys: dict[str, torch.Tensor] = {}
        self._minimum: dict[str, float] = {}

    def observe(self, name: str, x: torch.Tensor) -> None:
        """Add the values of ``x`` to ``name``'s sample (only the kept subset leaves x's device)."""
        flat = x.detach().reshape(-1)
        if flat.numel() == 0:
            return
        self._minimum[name] = min(self._minimum.get(name, float("inf")), float(flat.min()))
        keys = torch.rand(flat.numel(), generator=self._generator)
        if flat.numel() > self.max_samples:
            keys, index = torch.topk(keys, self.max_samples, largest=False)
            flat = flat[index.to(flat.device)]
        values = torch.cat([self._values.get(name, torch.empty(0)), flat.float().cpu()])
        keys = torch.cat([self._keys.get(name, torch.empty(0)), keys])
        if values.numel() > self.max_samples:
            keys, index = torch.topk(keys, self.max_samples, largest=False)
            values = values[index]
        self._values[name], self._keys[name] = values, keys

    def seen(self, name: str) -> bool:
        return name in self._values

    def sample(self, name: str) -> torch.Tensor:
        """The kept values of ``name`` (at most ``max_samples``)."""
        return self._values[name]

    def minimum(self, name: str) -> float:
        """Smallest value ever observed for ``name``."""
        return self._minimum[name]
