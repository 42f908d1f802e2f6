"""The two image-set kinds every split is stored as: in-memory uint8 tensors, or lazily decoded files.

Both hand out uint8 ``[B, C, H, W]`` batches through ``batch(indices)``; normalisation and augmentation
happen later, per batch (``smpq.data.batch_ops``), so a stored split stays exact and compact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smpq.errors import DataError

MODES = {1: "L", 3: "RGB"}


def _check_labels(labels: torch.Tensor, n: int) -> None:
    if labels.dtype != torch.int64 or labels.dim() != 1 or labels.numel() != n:
        raise ValueError(f"labels must be an int64 tensor of shape [{n}], got {labels.dtype} "
                         f"{tuple(labels.shape)}; convert them with labels.long()")


def _index_tensor(indices: np.ndarray | torch.Tensor | Sequence[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(indices), dtype=torch.int64)


class TensorImages:
    """An in-memory image set: ``images`` uint8 ``[N, C, H, W]`` (square) with int64 ``labels`` ``[N]``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be a uint8 tensor [N, C, S, S], got {images.dtype} "
                             f"{tuple(images.shape)}; square-crop and convert with .to(torch.uint8)")
        _check_labels(labels, images.shape[0])
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices`` as one ``[B, C, H, W]`` tensor."""
        return self.images[indices]

    def subset(self, indices: np.ndarray) -> TensorImages:
        idx = _index_tensor(indices)
        return TensorImages(self.images[idx].contiguous(), self.labels[idx].clone())


class FileImages:
    """Image files under ``root``, decoded with PIL on access and resized to ``image_size`` square.

    Decoding: convert to RGB (or L when ``in_channels == 1``), resize the shorter side to
    ``image_size`` (bilinear), then centre-crop; this mirrors the usual ImageNet evaluation transform.
    """

    def __init__(self, root: str | Path, files: list[str], labels: torch.Tensor, image_size: int,
                 in_channels: int = 3) -> None:
        if in_channels not in MODES:
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        _check_labels(labels, len(files))
        self.root = Path(root)
        self.files = list(files)
        self.labels = labels
        self._image_size = int(image_size)
        self._in_channels = int(in_channels)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def image_size(self) -> int:
        return self._image_size

    def image(self, index: int) -> torch.Tensor:
        """Decode file ``index`` to a uint8 ``[C, S, S]`` tensor."""
        path = self.root / self.files[index]
        try:
            with Image.open(path) as img:
                img = img.convert(MODES[self._in_channels])
                img = _resize_center_crop(img, self._image_size)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{path}: cannot decode image ({err}); replace or delete the file") from None
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode the files at ``indices`` into one uint8 ``[B, C, S, S]`` tensor."""
        if len(indices) == 0:
            return torch.empty((0, self._in_channels, self._image_size, self._image_size), dtype=torch.uint8)
        return torch.stack([self.image(int(i)) for i in indices])

    def subset(self, indices: np.ndarray) -> FileImages:
        idx = np.asarray(indices, dtype=np.int64)
        return FileImages(self.root, [self.files[i] for i in idx], self.labels[_index_tensor(idx)].clone(),
                          self._image_size, self._in_channels)


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


ImageSet = TensorImages | FileImages
