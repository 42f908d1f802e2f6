"""A per-sample ``torch.utils.data.Dataset`` view of an image set, for code that wants the standard API.

Training code should prefer ``make_loader`` (vectorised, much faster); this view exists for interop
(e.g. a ``DataLoader`` with workers). Augmentation randomness is a pure function of
``(seed, epoch, index)``, so results do not depend on worker count or access order.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from smpq.data.batch_ops import Normaliser, augment_batch
from smpq.data.image_sets import ImageSet
from smpq.data.seeding import torch_generator

STREAM_SAMPLE_AUGMENT = 3


class NormalisedImages(Dataset):
    """Yields ``(float32 [C, S, S] normalised image, int label)``; call ``set_epoch`` to vary augmentation."""

    def __init__(self, images: ImageSet, mean: list[float], std: list[float], *, augment: bool = False,
                 seed: int = 0) -> None:
        self.images = images
        self.normalise = Normaliser(mean, std, images.in_channels)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self.images):
            raise IndexError(f"index {index} out of range for {len(self.images)} images")
        batch = self.images.batch(torch.tensor([index]))
        if self.augment:
            batch = augment_batch(batch, torch_generator(self.seed, self.epoch, STREAM_SAMPLE_AUGMENT, index))
        return self.normalise(batch)[0], int(self.images.labels[index])
