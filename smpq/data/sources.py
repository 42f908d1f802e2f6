"""Dispatch from the ``data.dataset`` name in params to the loader for that source."""

from __future__ import annotations

from pathlib import Path

from smpq.data.cifar10 import load_cifar10
from smpq.data.fashion_mnist import DEBIAN_DIR, load_fashion_mnist, locate_fashion_mnist
from smpq.data.image_folder import load_image_folder
from smpq.data.raw import RawDataset
from smpq.errors import DataError

DATASET_NAMES = ("fashion_mnist", "cifar10", "image_folder")  # the allowed values of data.dataset


def missing_setting(name: str, root: object, image_size: int | None) -> tuple[str, str] | None:
    """The ``data.*`` key that dataset ``name`` needs but lacks, with what it must hold; None when complete."""
    if name == "image_folder" and image_size is None:
        return "image_size", "required when dataset is image_folder (e.g. 224)"
    if name in ("cifar10", "image_folder") and root is None:
        return "root", f"required for dataset {name!r} (the folder holding it)"
    return None


def load_dataset(name: str, *, root: Path | None, download_dir: Path, allow_download: bool,
                 image_size: int | None, debian_dir: Path = DEBIAN_DIR) -> RawDataset:
    """Find and load dataset ``name``; ``image_size`` is required for (and only used by) ``image_folder``."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; data.dataset must be one of {', '.join(DATASET_NAMES)}")
    if missing := missing_setting(name, root, image_size):
        raise DataError(f"data.{missing[0]}: {missing[1]}")
    if name == "fashion_mnist":
        raw = load_fashion_mnist(locate_fashion_mnist(root, download_dir, allow_download, debian_dir))
    elif name == "cifar10":
        raw = load_cifar10(Path(root))
    else:
        return load_image_folder(Path(root), image_size)
    if image_size is not None and image_size != raw.image_size:
        raise DataError(f"data.image_size is {image_size} but {name} images are {raw.image_size} pixels; "
                        "set data.image_size to null (it applies to image_folder only)")
    return raw
