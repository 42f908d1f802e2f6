"""Batched, seeded loading of an image set for training and evaluation.

Reproducibility: epoch ``e`` always yields the same batches for the same ``seed``, whatever the number of
workers. The example order (and, with ``samples_per_epoch``, the subsample) is drawn from the stream
``(seed, e, ORDER)``, and batch ``b``'s augmentation from its own stream ``(seed, e, AUGMENT, b)``, so a
worker process builds any batch alone, bit for bit as the main process would; nothing touches torch's
global RNG. Call ``set_epoch(e)`` before iterating (``smpq.train`` does); without it every pass repeats
epoch 0.

Speed: batches are built whole — one uint8 gather, one vectorised augmentation, one fused normalise —
instead of collating per-sample ``__getitem__`` results. With ``workers == 0`` (``runtime.loader_workers``,
the default) the main process builds them; with ``workers > 0`` a ``torch.utils.data.DataLoader`` of that
many processes (``forkserver``: safe with the threads already running here) builds the uint8 batches
(gather, augmentation, shard slicing) ahead of use; workers start anew each epoch, so this pays off only when
building a batch is costly (large files decoded from disk, host-memory splits feeding a GPU); an in-memory split
on the CPU is fastest with 0 (the gather is memory-bound).

Devices: given an accelerator ``device``, an in-memory split moves there once, when the loader is made,
if its uint8 images fit the rule of ``smpq.device.split_fits`` (at most a quarter of the free device
memory), and its batches are built in the main process whatever ``workers`` says; otherwise it stays in host
memory and each uint8 batch (from a worker, in pinned memory, when ``workers > 0``) is copied asynchronously.
Either way the batch is normalised on the device, in the main process. Data-parallel: with
``shard=(rank, world)`` the loader builds the same global batch (same order, same augmentation draws) and
yields its examples ``rank, rank + world, ...``, as a ``DistributedSampler`` with the per-process batch
``batch_size / world``.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from smpq.data.batch_ops import Normaliser, augment_batch
from smpq.data.image_sets import ImageSet, TensorImages
from smpq.data.seeding import torch_generator
from smpq.device import split_fits

log = logging.getLogger(__name__)

STREAM_ORDER = 1
STREAM_AUGMENT = 2


class BatchLoader:
    """An iterable of ``(float32 images [B, C, S, S], int64 labels [B])`` with ``len()`` and ``set_epoch``."""

    def __init__(self, images: ImageSet, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 shuffle: bool, seed: int, augment: bool = False, samples_per_epoch: int | None = None,
                 drop_last: bool = False, device: torch.device | None = None, shard: tuple[int, int] = (0, 1),
                 workers: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be at least 1 (or None for all), got {samples_per_epoch}")
        if workers < 0:
            raise ValueError(f"workers must be 0 (batches built here) or more, got {workers}")
        self.images = images
        self.batch_size = batch_size
        self.normalise = Normaliser(mean, std, images.in_channels)
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.samples = len(images) if samples_per_epoch is None else min(samples_per_epoch, len(images))
        if samples_per_epoch is not None and samples_per_epoch > len(images):
            log.warning("samples_per_epoch %d exceeds the %d images; using all of them each epoch",
                        samples_per_epoch, len(images))
        self.epoch = 0
        self.rank, self.world = shard
        self.workers = workers
        self.images, self.transfer_to = _place(images, device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order, subsample and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.samples // self.batch_size
        return -(-self.samples // self.batch_size)

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """The example indices visited in ``epoch``, in order (a pure function of seed and epoch)."""
        n = len(self.images)
        if not self.shuffle and self.samples == n:
            return torch.arange(n)
        chosen = torch.randperm(n, generator=torch_generator(self.seed, epoch, STREAM_ORDER))[:self.samples]
        return chosen if self.shuffle else chosen.sort().values

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = _EpochBatches(self.images, self.epoch_indices(self.epoch), self.batch_size, len(self),
                                self.seed, self.epoch, self.augment, (self.rank, self.world))
        if self.workers > 0 and self.images.labels.device.type == "cpu":  # a split on the device: built here
            stream = DataLoader(batches, batch_size=None, shuffle=False, num_workers=self.workers,
                                pin_memory=self.transfer_to is not None and self.transfer_to.type == "cuda",
                                persistent_workers=False, multiprocessing_context=_worker_start(),
                                generator=torch.Generator().manual_seed(self.seed))  # not the global RNG
        else:
            stream = (batches[b] for b in range(len(batches)))
        for batch, labels in stream:
            if self.transfer_to is not None:
                if not batch.is_pinned():
                    batch, labels = batch.pin_memory(), labels.pin_memory()
                batch = batch.to(self.transfer_to, non_blocking=True)
                labels = labels.to(self.transfer_to, non_blocking=True)
            yield self.normalise(batch), labels


class _EpochBatches(Dataset):
    """Item ``b``: the uint8 batch ``b`` of one epoch and its labels, augmented from the batch's own stream
    and cut to this process's shard; a pure function of its fields, so any worker builds it the same."""

    def __init__(self, images: ImageSet, indices: torch.Tensor, batch_size: int, batches: int, seed: int,
                 epoch: int, augment: bool, shard: tuple[int, int]) -> None:
        self.images, self.indices, self.batch_size, self.batches = images, indices, batch_size, batches
        self.seed, self.epoch, self.augment, (self.rank, self.world) = seed, epoch, augment, shard

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices[b * self.batch_size:(b + 1) * self.batch_size]
        batch, labels = self.images.batch(idx), self.images.labels[idx]
        if self.augment:
            batch = augment_batch(batch, torch_generator(self.seed, self.epoch, STREAM_AUGMENT, b))
        if self.world > 1:
            batch, labels = batch[self.rank::self.world], labels[self.rank::self.world]
        return batch, labels


def make_loader(images: ImageSet, *, batch_size: int, mean: Sequence[float], std: Sequence[float], shuffle: bool,
                seed: int, augment: bool = False, samples_per_epoch: int | None = None,
                drop_last: bool = False, device: torch.device | None = None,
                shard: tuple[int, int] = (0, 1), workers: int = 0) -> BatchLoader:
    """A ``BatchLoader`` over ``images``; see the module docstring for how seed and epoch fix the batches."""
    return BatchLoader(images, batch_size=batch_size, mean=mean, std=std, shuffle=shuffle, seed=seed,
                       augment=augment, samples_per_epoch=samples_per_epoch, drop_last=drop_last, device=device,
                       shard=shard, workers=workers)


def _place(images: ImageSet, device: torch.device | None) -> tuple[ImageSet, torch.device | None]:
    """(the image set to read batches from, the device each batch is copied to, or None): an in-memory split
    that fits moves to the device now; one that does not (or a folder of files) is copied batch by batch."""
    if device is None or device.type == "cpu":
        return images, None
    if isinstance(images, TensorImages) and split_fits(images.images.numel(), device):
        return TensorImages(images.images.to(device), images.labels.to(device)), None
    log.info("the split stays in host memory (does not fit smpq.device.split_fits); pinned batch copies")
    return images, device


def _worker_start() -> multiprocessing.context.BaseContext:
    """How worker processes start: ``forkserver``, not Linux's default ``fork`` (forking a parent that runs
    threads — OpenMP, CUDA, tracking — can deadlock the child); the server imports this module (and torch)
    once, so each epoch's workers fork from it without importing torch again."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context
