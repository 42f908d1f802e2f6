"""The dataset card: what was loaded, from where, how it was split, and checksums to prove it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from smpq.data.image_sets import ImageSet
from smpq.data.raw import RawDataset
from smpq.data.stats import channel_stats

CHUNK_BYTES = 1 << 20
CARD_FILE = "card.json"  # the card's name inside a prepared-data folder


def file_sha256(path: Path) -> str:
    """sha256 of a file's contents, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _relative(path: Path, source: Path) -> str:
    try:
        return Path(path).relative_to(source).as_posix()
    except ValueError:
        return str(path)


def listing_sha256(files: list[Path], source: Path) -> str:
    """sha256 of the sorted ``relative/path<TAB>size`` lines, one per file (cheap for big image trees)."""
    lines = sorted(f"{_relative(p, source)}\t{Path(p).stat().st_size}\n" for p in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def raw_checksums(raw: RawDataset) -> dict[str, Any]:
    """Checksums of the raw files: per-file sha256, or one listing hash for ImageFolder trees."""
    if raw.hash_listing:
        return {"method": "sha256 of the sorted (relative path, size) listing; image contents are not hashed",
                "num_files": len(raw.files), "listing_sha256": listing_sha256(raw.files, raw.source)}
    return {"method": "sha256 of each file's contents",
            "sha256": {_relative(p, raw.source): file_sha256(Path(p)) for p in raw.files}}


def _class_counts(image_set: ImageSet, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(image_set.labels.numpy(), minlength=len(classes))
    return {name: int(c) for name, c in zip(classes, counts)}


def dataset_card(raw: RawDataset, splits: dict[str, np.ndarray], image_sets: dict[str, ImageSet], *,
                 seed: int) -> dict[str, Any]:
    """A JSON-ready description of the prepared dataset; normalisation comes from the ``train`` split."""
    mean, std = channel_stats(image_sets["train"], seed=seed)
    return {
        "dataset": raw.name,
        "source": str(raw.source),
        "classes": list(raw.classes),
        "num_classes": raw.num_classes,
        "in_channels": raw.in_channels,
        "image_size": raw.image_size,
        "split_seed": seed,
        "pool_sizes": {"train": len(raw.train), "test": len(raw.test)},
        "counts": {name: len(images) for name, images in image_sets.items()},
        "class_counts": {name: _class_counts(images, raw.classes) for name, images in image_sets.items()},
        "split_sha256": {name: hashlib.sha256(np.asarray(idx, dtype="<i8").tobytes()).hexdigest()
                         for name, idx in splits.items()},
        "raw_files": raw_checksums(raw),
        "normalization": {"mean": mean, "std": std, "computed_on": "train", "units": "[0, 1] pixel values"},
    }
