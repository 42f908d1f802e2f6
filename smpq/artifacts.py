"""Atomic artifact I/O: every file is written to a temporary sibling, then renamed into place.

A stage that fails half-way therefore never leaves a truncated output behind (SPEC §6).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from smpq.errors import ArtifactError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the temporary file onto ``path`` only if it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if (renamed := _named(err, tmp, path)) is err:
            raise
        raise renamed from None
    return path


def _named(err: BaseException, tmp: str | Path, path: Path) -> BaseException:
    """An ``OSError`` about the temporary file (or folder), restated about the output it was to become."""
    if isinstance(err, OSError) and (err.filename is None or str(err.filename).startswith(str(tmp))):
        return type(err)(err.errno, err.strerror, str(path))
    return err


def replace_folder(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp_folder)`` and swap the finished folder in for ``path`` as a whole: a failure leaves the
    old folder untouched, and no reader sees old and new files mixed (two renames; between them, for an
    instant, ``path`` is absent and the old folder sits beside it as ``.<name>.old.*``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        fill(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if (renamed := _named(err, tmp, path)) is err:
            raise
        raise renamed from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found (run the stage that produces it first)") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: not valid JSON ({err}); delete it and rerun its stage") from None


def write_yaml(path: str | Path, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def save_state_dict(path: str | Path, state: dict[str, Any]) -> Path:
    """Save a ``state_dict`` (tensors and plain containers only, so it loads with ``weights_only``).

    Serialised through memory: ``torch.save`` to a file names the zip archive after the (temporary)
    file, which would make equal checkpoints differ byte-wise and defeat DVC's caching.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing, corrupt or unsafe file is a one-line
    ``ArtifactError`` (never torch's advice to retry with pickle: the file may come from anyone)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt files
        raise ArtifactError(_unreadable(path, err)) from None
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def _unreadable(path: Path, err: Exception) -> str:
    """Why torch could not load ``path`` (safely), in one line with the fix."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return f"{path}: empty file, not a checkpoint; restore it or rerun the stage that writes it"
    is_zip, is_pickle = head == b"PK\x03\x04", head[:1] == b"\x80" and 2 <= head[1] <= 5
    if isinstance(err, pickle.UnpicklingError) and (is_zip or is_pickle):
        found = re.search(r"GLOBAL (\S+)", str(err))
        needs = f"the Python object {found.group(1)}" if found else "Python objects other than tensors"
        return (f"{path}: not a plain tensor checkpoint (it needs {needs} to load); do not load it with pickle, "
                "which can run code hidden in the file; save its state_dict (tensors only) from a trusted copy")
    what = "a damaged or truncated zip archive" if is_zip else "neither a zip archive nor a pickle"
    return f"{path}: not a PyTorch checkpoint ({what}); restore it or rerun the stage that writes it"
