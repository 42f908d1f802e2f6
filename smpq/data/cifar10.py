"""CIFAR-10 in torchvision's python layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.

The batches are pickles; they are read with an unpickler that only admits numpy arrays and plain
containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smpq.data.image_sets import TensorImages
from smpq.data.raw import RawDataset
from smpq.errors import DataError

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIZE = 32
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the numpy array constructors."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as stream:
            obj = _ArrayUnpickler(stream, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: CIFAR-10 batch not found; the folder must hold {BATCH_DIR}/ as torchvision "
                        "extracts it (data_batch_1..5, test_batch)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err}); "
                        "delete it and extract the archive again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in a CIFAR-10 batch, got {type(obj).__name__}")
    return obj


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: CIFAR-10 batch lacks b'data' (array) or b'labels'; the file is corrupt")
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE or len(labels) != len(data):
        raise DataError(f"{path}: expected uint8 data [N, {3 * SIZE * SIZE}] with N labels, got {data.dtype} "
                        f"{data.shape} and {len(labels)} labels; the file is corrupt")
    if labels.size and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise DataError(f"{path}: labels outside 0..{len(CLASSES) - 1}; the file is corrupt")
    return data.reshape(-1, 3, SIZE, SIZE), labels


def _images(paths: list[Path]) -> TensorImages:
    parts = [_read_batch(p) for p in paths]
    images = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    return TensorImages(torch.from_numpy(images), torch.from_numpy(labels))


def _class_names(batch_dir: Path) -> list[str]:
    meta_path = batch_dir / META
    if not meta_path.is_file():
        return list(CLASSES)
    names = _read_pickle(meta_path).get(b"label_names")
    if not isinstance(names, list) or len(names) != len(CLASSES):
        raise DataError(f"{meta_path}: expected {len(CLASSES)} b'label_names'; the file is corrupt")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def cifar10_batch_dir(folder: Path) -> Path:
    """``folder`` itself if it is ``cifar-10-batches-py``, else ``folder/cifar-10-batches-py``."""
    folder = Path(folder)
    return folder if folder.name == BATCH_DIR or (folder / TEST_BATCH).is_file() else folder / BATCH_DIR


def load_cifar10(folder: Path) -> RawDataset:
    """Load CIFAR-10 (50k/10k, [N, 3, 32, 32] uint8) from ``folder`` or its ``cifar-10-batches-py``."""
    batch_dir = cifar10_batch_dir(folder)
    train_paths = [batch_dir / name for name in TRAIN_BATCHES]
    test_path = batch_dir / TEST_BATCH
    missing = [p.name for p in [*train_paths, test_path] if not p.is_file()]
    if missing:
        raise DataError(f"{batch_dir}: missing CIFAR-10 file(s) {', '.join(missing)}; set data.root to the "
                        f"folder that holds {BATCH_DIR}/ (torchvision's CIFAR10 layout)")
    files = [*train_paths, test_path] + ([batch_dir / META] if (batch_dir / META).is_file() else [])
    return RawDataset(name="cifar10", train=_images(train_paths), test=_images([test_path]),
                      classes=_class_names(batch_dir), source=batch_dir, files=files)
