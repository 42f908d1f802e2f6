"""Seeded, disjoint index splits: ``train`` and ``search_val`` from the source's train pool, ``test``
from its test pool (optionally a seeded subsample). The seed alone fixes every index.
"""

from __future__ import annotations

import numpy as np

from smpq.data.image_sets import ImageSet
from smpq.data.raw import RawDataset
from smpq.data.seeding import numpy_rng

STREAM_TRAIN_POOL = 0
STREAM_TEST_POOL = 1
SPLIT_NAMES = ("train", "search_val", "test")


def _check_sizes(n_train_pool: int, n_test_pool: int, search_val_size: int, train_size: int | None,
                 test_size: int | None) -> None:
    if search_val_size < 1:
        raise ValueError(f"data.search_val_size must be at least 1, got {search_val_size}")
    if train_size is not None and train_size < 1:
        raise ValueError(f"data.train_size must be at least 1 (or null for the rest), got {train_size}")
    wanted = search_val_size + (train_size if train_size is not None else 1)
    if wanted > n_train_pool:
        need = f"data.search_val_size ({search_val_size}) + " + (
            f"data.train_size ({train_size})" if train_size is not None else "at least 1 training image")
        raise ValueError(f"{need} = {wanted} exceeds the {n_train_pool} images of the source's train set; "
                         "lower data.search_val_size or data.train_size")
    if test_size is not None and not 1 <= test_size <= n_test_pool:
        raise ValueError(f"data.test_size ({test_size}) must be between 1 and the {n_test_pool} images of the "
                         "source's test set; lower it or set it to null for the whole test set")


def make_splits(n_train_pool: int, n_test_pool: int, *, search_val_size: int, seed: int,
                train_size: int | None = None, test_size: int | None = None) -> dict[str, np.ndarray]:
    """Sorted int64 index arrays ``train``/``search_val`` (into the train pool) and ``test`` (test pool)."""
    _check_sizes(n_train_pool, n_test_pool, search_val_size, train_size, test_size)
    order = numpy_rng(seed, STREAM_TRAIN_POOL).permutation(n_train_pool)
    train_end = n_train_pool if train_size is None else search_val_size + train_size
    if test_size is None:
        test = np.arange(n_test_pool)
    else:
        test = numpy_rng(seed, STREAM_TEST_POOL).choice(n_test_pool, size=test_size, replace=False)
    return {"train": np.sort(order[search_val_size:train_end]).astype(np.int64),
            "search_val": np.sort(order[:search_val_size]).astype(np.int64),
            "test": np.sort(test).astype(np.int64)}


def materialise_splits(raw: RawDataset, splits: dict[str, np.ndarray]) -> dict[str, ImageSet]:
    """The image set of each split (``train`` and ``search_val`` from ``raw.train``, ``test`` from ``raw.test``)."""
    missing = [name for name in SPLIT_NAMES if name not in splits]
    if missing:
        raise ValueError(f"splits lack {missing}; build them with make_splits")
    return {"train": raw.train.subset(splits["train"]), "search_val": raw.train.subset(splits["search_val"]),
            "test": raw.test.subset(splits["test"])}
