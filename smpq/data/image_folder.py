"""ImageNet-style folder trees: ``folder/train/<class>/*.jpg`` and ``folder/val/<class>/...`` (or ``test``).

Images stay on disk and are decoded lazily (``FileImages``); classes are the sorted ``train`` subfolders.
"""

from __future__ import annotations

from pathlib import Path

import torch

from smpq.data.image_sets import FileImages
from smpq.data.raw import RawDataset
from smpq.errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TRAIN_DIR = "train"
TEST_DIRS = ("val", "test")


def _class_dirs(split_dir: Path) -> list[Path]:
    dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{split_dir}: no class subfolders; expected {split_dir}/<class>/<image files>")
    return dirs


def _images_in(class_dir: Path) -> list[Path]:
    files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"{class_dir}: class folder has no images ({', '.join(EXTENSIONS)}); "
                        "add images or remove the folder")
    return files


def _scan(folder: Path, split_dir: Path, classes: list[str], image_size: int) -> tuple[FileImages, list[Path]]:
    """All images under ``split_dir`` as a FileImages with paths relative to ``folder``."""
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for class_dir in _class_dirs(split_dir):
        if class_dir.name not in index:
            raise DataError(f"{class_dir}: class {class_dir.name!r} is not among the {TRAIN_DIR}/ classes; "
                            f"every {split_dir.name}/ class folder needs a {TRAIN_DIR}/ counterpart")
        found = _images_in(class_dir)
        files += found
        labels += [index[class_dir.name]] * len(found)
    relative = [p.relative_to(folder).as_posix() for p in files]
    return FileImages(folder, relative, torch.tensor(labels, dtype=torch.int64), image_size), files


def _test_dir(folder: Path) -> Path:
    for name in TEST_DIRS:
        if (folder / name).is_dir():
            return folder / name
    raise DataError(f"{folder}: no {' or '.join(TEST_DIRS)}/ folder; an ImageFolder dataset needs "
                    f"{TRAIN_DIR}/<class>/ and val/<class>/ (or test/<class>/)")


def load_image_folder(folder: Path, image_size: int) -> RawDataset:
    """Scan ``folder/train`` and ``folder/val`` (or ``test``); images decode to RGB ``image_size`` squares."""
    folder = Path(folder)
    train_dir = folder / TRAIN_DIR
    if not train_dir.is_dir():
        raise DataError(f"{folder}: no {TRAIN_DIR}/ folder; an ImageFolder dataset needs "
                        f"{TRAIN_DIR}/<class>/<images> and val/<class>/<images>")
    classes = [d.name for d in _class_dirs(train_dir)]
    train, train_files = _scan(folder, train_dir, classes, image_size)
    test, test_files = _scan(folder, _test_dir(folder), classes, image_size)
    return RawDataset(name="image_folder", train=train, test=test, classes=classes, source=folder,
                      files=train_files + test_files, hash_listing=True)
