"""Vectorised per-batch image operations on uint8 ``[B, C, H, W]`` tensors: augmentation and normalisation.

Working on whole batches (not per sample) keeps the in-memory loader fast, and taking an explicit
``torch.Generator`` makes every random choice reproducible from the loader's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def crop_padding(image_size: int) -> int:
    """Zero padding for the random-crop augmentation: ``image_size // 8``, at least 2 pixels."""
    return max(2, image_size // 8)


def augment_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding (``crop_padding``) plus random horizontal flip, per sample.

    Each sample's crop (and flip) is one flat index map into its padded image, applied with a single
    ``gather`` over the whole batch.
    """
    n, channels, height, width = batch.shape
    pad = crop_padding(height)
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad)).contiguous()
    padded_width = width + 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    grid = torch.arange(height)[:, None] * padded_width + torch.arange(width)
    grids = torch.stack([grid, grid.flip(1)])  # [plain, mirrored] pixel maps
    index = (dy * padded_width + dx)[:, None, None] + grids[flip.long()]
    index = index.to(batch.device).view(n, 1, height * width).expand(n, channels, height * width)
    return padded.view(n, channels, -1).gather(2, index).view(n, channels, height, width)


class Normaliser:
    """``(x / 255 - mean) / std`` per channel, as one fused multiply-subtract on a float32 batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_channels: int) -> None:
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"normalisation has mean {list(mean)} and std {list(std)} but the images have "
                             f"{in_channels} channel(s); give one value per channel (see the dataset card)")
        if any(float(s) <= 0 for s in std):
            raise ValueError(f"normalisation std {list(std)} must be positive; recompute it from the train split")
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.scale.device != batch.device:  # the first batch on an accelerator: move the constants once
            self.scale, self.shift = self.scale.to(batch.device), self.shift.to(batch.device)
        return batch.to(torch.float32).mul_(self.scale).sub_(self.shift)
