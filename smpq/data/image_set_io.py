"""Save and load an image set as one ``torch.save`` file that loads with ``weights_only=True``.

In-memory sets store their uint8 tensor; file sets store only ``root``, the relative ``files``,
``labels`` and decoding settings (the images stay where they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smpq.artifacts import load_state_dict, save_state_dict
from smpq.data.image_sets import FileImages, ImageSet, TensorImages
from smpq.errors import ArtifactError

FORMAT = "smpq.image_set"
VERSION = 1


def save_image_set(path: str | Path, image_set: ImageSet) -> Path:
    """Write ``image_set`` atomically to ``path``."""
    state: dict[str, Any] = {"format": FORMAT, "version": VERSION, "labels": image_set.labels}
    if isinstance(image_set, TensorImages):
        state.update(kind="tensor", images=image_set.images)
    elif isinstance(image_set, FileImages):
        state.update(kind="files", root=str(image_set.root), files=list(image_set.files),
                     image_size=image_set.image_size, in_channels=image_set.in_channels)
    else:
        raise TypeError(f"cannot save {type(image_set).__name__}; expected TensorImages or FileImages")
    return save_state_dict(path, state)


def load_image_set(path: str | Path) -> ImageSet:
    """Read an image set written by ``save_image_set``; anything else is an ``ArtifactError``."""
    state = load_state_dict(path)
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ArtifactError(f"{path}: not an SMPQ image set (format {state.get('format')!r}, version "
                            f"{state.get('version')!r}; expected {FORMAT!r} v{VERSION}); rerun the prepare stage")
    try:
        return _from_state(state)
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: image set is incomplete or inconsistent ({type(err).__name__}: {err}); "
                            "rerun the prepare stage") from None


def _from_state(state: dict[str, Any]) -> ImageSet:
    labels = state["labels"]
    if not isinstance(labels, torch.Tensor):
        raise TypeError("labels is not a tensor")
    if state["kind"] == "tensor":
        return TensorImages(state["images"], labels)
    if state["kind"] == "files":
        return FileImages(state["root"], state["files"], labels, int(state["image_size"]),
                          int(state["in_channels"]))
    raise ValueError(f"unknown kind {state['kind']!r}")
