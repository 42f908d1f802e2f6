"""Dispatch from the ``data.dataset`` name in params to the loader for that source."""

from __future__ import annotations

from pathlib import Path

from smpq.data.cifar10 import load_cifar10
from smpq.data.errors import DataError
from smpq.data.fashion_mnist import DEBIAN_DIR, load_fashion_mnist, locate_fashion_mnist
from smpq.data.image_folder import load_image_folder
from smpq.data.raw import RawDataset

DATASET_NAMES = ("fashion_mnist", "cifar10", "image_folder")


def load_dataset(name: str, *, root: Path | None, download_dir: Path, allow_download: bool,
                 image_size: int | None, debian_dir: Path = DEBIAN_DIR) -> RawDataset:
    """Find and load dataset ``name``; ``image_size`` is required for (and only used by) ``image_folder``."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; data.dataset must be one of {', '.join(DATASET_NAMES)}")
    if name == "fashion_mnist":
        raw = load_fashion_mnist(locate_fashion_mnist(root, download_dir, allow_download, debian_dir))
    elif root is None:
        raise DataError(f"dataset {name!r} needs data.root in params.yaml: the folder that holds it")
    elif name == "cifar10":
        raw = load_cifar10(Path(root))
    else:
        if image_size is None:
            raise DataError("dataset 'image_folder' needs data.image_size in params.yaml (e.g. 224)")
        return load_image_folder(Path(root), image_size)
    if image_size is not None and image_size != raw.image_size:
        raise DataError(f"data.image_size is {image_size} but {name} images are {raw.image_size} pixels; "
                        "set data.image_size to null (it applies to image_folder only)")
    return raw
