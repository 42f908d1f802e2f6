"""Per-channel normalisation statistics of an image set, in [0, 1] pixel units."""

from __future__ import annotations

import torch

from smpq.data.image_sets import ImageSet
from smpq.data.seeding import numpy_rng

CHUNK = 1024
MIN_STD = 1e-3  # a constant channel would otherwise make normalisation divide by zero


def channel_stats(image_set: ImageSet, max_samples: int = 10000, seed: int = 0) -> tuple[list[float], list[float]]:
    """Mean and std per channel over (a seeded subsample of at most ``max_samples``) images.

    Sums are accumulated in float64 over chunks, so memory stays bounded for large sets.
    """
    n = len(image_set)
    if n == 0:
        raise ValueError("cannot compute channel statistics of an empty image set; check the split sizes")
    if n > max_samples:
        chosen = torch.from_numpy(numpy_rng(seed, 0).choice(n, size=max_samples, replace=False)).sort().values
    else:
        chosen = torch.arange(n)
    total = torch.zeros(image_set.in_channels, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(chosen), CHUNK):
        pixels = image_set.batch(chosen[start:start + CHUNK]).to(torch.float64).div_(255.0)
        total += pixels.sum(dim=(0, 2, 3))
        total_sq += pixels.square().sum(dim=(0, 2, 3))
    count = len(chosen) * image_set.image_size ** 2
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(MIN_STD)
    return [float(m) for m in mean], [float(s) for s in std]
