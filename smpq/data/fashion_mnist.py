"""Fashion-MNIST: find the four IDX files (SPEC §4 lookup order) and load them as uint8 tensors."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from smpq.data.idx import read_idx
from smpq.data.image_sets import TensorImages
from smpq.data.raw import RawDataset
from smpq.errors import DataError

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
NOT_FOUND = ("Fashion-MNIST not found: install it with 'apt-get install dataset-fashion-mnist' (files go to "
             "/usr/share/datasets/fashion-mnist) or set data.root in params.yaml to a folder with the four IDX files")


def idx_files(folder: Path) -> dict[str, Path | None]:
    """Each IDX file's path in ``folder`` (``.gz`` preferred, else plain), or None where it is missing."""
    found: dict[str, Path | None] = {}
    for key, stem in FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        found[key] = next((p for p in candidates if p.is_file()), None)
    return found


def _complete(folder: Path) -> bool:
    return all(p is not None for p in idx_files(folder).values())


def locate_fashion_mnist(root: Path | None, download_dir: Path, allow_download: bool,
                         debian_dir: Path = DEBIAN_DIR) -> Path:
    """The folder holding the four IDX files.

    Order: ``root`` (if given it must be complete: no silent fallback), ``debian_dir``, files already
    in ``download_dir`` (flat or torchvision's ``FashionMNIST/raw``), then a torchvision download.
    """
    if root is not None:
        missing = [FILES[k] for k, p in idx_files(Path(root)).items() if p is None]
        if missing:
            raise DataError(f"data.root {root} lacks Fashion-MNIST file(s) {', '.join(missing)} (.gz or plain); "
                            "put the four IDX files there or set data.root to null to use the installed copy")
        return Path(root)
    torchvision_dir = Path(download_dir) / "FashionMNIST" / "raw"
    for folder in (Path(debian_dir), Path(download_dir), torchvision_dir):
        if _complete(folder):
            return folder
    if allow_download:
        cause = _download(Path(download_dir))
        if cause is None and _complete(torchvision_dir):
            return torchvision_dir
        raise DataError(f"{NOT_FOUND} (download into {download_dir} failed: {cause or 'files missing after it'})")
    raise DataError(f"{NOT_FOUND} (download is disabled: data.allow_download is false)")


def _download(download_dir: Path) -> str | None:
    """Fetch with torchvision into ``download_dir/FashionMNIST/raw``; the failure cause, or None."""
    from torchvision.datasets import FashionMNIST
    log.info("Fashion-MNIST not installed; downloading into %s", download_dir)
    try:
        for train in (True, False):
            FashionMNIST(str(download_dir), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError; torchvision wraps others
        log.warning("Fashion-MNIST download failed: %s", err)
        return f"{type(err).__name__}: {' '.join(str(err).split())}"
    return None


def _load_split(images_path: Path, labels_path: Path) -> TensorImages:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype.itemsize != 1 or images.shape[1] != images.shape[2]:
        raise DataError(f"{images_path}: expected uint8 images [N, 28, 28], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape} labels for {images.shape[0]} images in {images_path}; "
                        "the files do not belong together, fetch both again")
    if labels.size and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASSES):
        raise DataError(f"{labels_path}: labels outside 0..{len(CLASSES) - 1}; the file is corrupt")
    return TensorImages(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())


def load_fashion_mnist(folder: Path) -> RawDataset:
    """Load the 60k/10k Fashion-MNIST split from the IDX files in ``folder`` ([N, 1, 28, 28] uint8)."""
    folder = Path(folder)
    paths = idx_files(folder)
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"{folder}: missing Fashion-MNIST file(s) {', '.join(missing)}; {NOT_FOUND}")
    train = _load_split(paths["train_images"], paths["train_labels"])
    test = _load_split(paths["test_images"], paths["test_labels"])
    if train.in_channels != 1 or train.image_size != test.image_size:
        raise DataError(f"{folder}: train and test images differ in size; fetch the files again")
    return RawDataset(name="fashion_mnist", train=train, test=test, classes=list(CLASSES), source=folder,
                      files=[p for p in paths.values() if p is not None])
