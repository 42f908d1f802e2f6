"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

Layout (big-endian): two zero bytes, a type code, the number of dimensions, one uint32 per
dimension, then the values in C order. Every field is checked, so a truncated download fails loudly.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from smpq.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in the IDX file at ``path`` (native byte order)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
                        "the file is corrupt, delete it and fetch it again")
    dtype, ndim = DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: IDX header truncated ({len(data)} bytes); delete the file and fetch it again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: IDX body has {len(data) - header} bytes but shape {shape} needs "
                        f"{expected - header}; the file is truncated or corrupt, delete it and fetch it again")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as raw:
            head = raw.read(2)
        if head != GZIP_MAGIC:
            return path.read_bytes()
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: gzip stream is truncated or corrupt ({err}); "
                        "delete the file and fetch it again") from None
