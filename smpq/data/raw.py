"""A dataset as found on disk: its train/test image sets, class names and the raw files it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smpq.data.image_sets import ImageSet


@dataclass
class RawDataset:
    """One source dataset. ``files`` are the raw files on disk, listed for the dataset card's checksums.

    ``hash_listing`` is True where hashing every file would be too slow (ImageFolder trees): the card
    then hashes the sorted (relative path, size) listing instead of the contents.
    """

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    source: Path
    files: list[Path]
    hash_listing: bool = field(default=False)

    @property
    def in_channels(self) -> int:
        return self.train.in_channels

    @property
    def image_size(self) -> int:
        return self.train.image_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)
