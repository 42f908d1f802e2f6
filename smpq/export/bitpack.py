"""Bit packing of signed integer weights at any width from 2 to 16 bits (docs/export.md, "Packing layout").

One little-endian bit stream: value ``i`` of a run written at ``bit_offset`` with ``bits`` bits occupies stream
bits ``[bit_offset + i·bits, bit_offset + (i+1)·bits)``, least significant bit first, as ``bits``-bit two's
complement; stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``. So 2-bit values go four to a byte and 3-bit
values cross byte boundaries: nothing is padded except the last byte of the whole stream.
"""

from __future__ import annotations

import numpy as np

MIN_BITS, MAX_BITS = 2, 16


def signed_range(bits: int) -> tuple[int, int]:
    """The two's-complement range ``[-2^(b-1), 2^(b-1) - 1]`` of ``bits``-bit values."""
    _check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def stream_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """The bits (0/1, uint8, LSB first per value) of ``values`` as ``bits``-bit two's complement."""
    values = np.asarray(values).reshape(-1)
    low, high = signed_range(bits)
    if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < low or values.max() > high):
        raise ValueError(f"values must be integers in [{low}, {high}] to pack at {bits} bits, "
                         f"got range [{values.min()}, {values.max()}] ({values.dtype})")
    fields = values.astype(np.int64) & ((1 << bits) - 1)
    return ((fields[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)


def pack(runs: list[tuple[np.ndarray, int]]) -> tuple[bytes, list[int]]:
    """Pack each ``(values, bits)`` run back to back into one stream; returns (bytes, bit offset of each run)."""
    parts, offsets, position = [], [], 0
    for values, bits in runs:
        offsets.append(position)
        parts.append(stream_bits(values, bits))
        position += parts[-1].size
    stream = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return np.packbits(stream, bitorder="little").tobytes(), offsets


def packed_bytes(total_bits: int) -> int:
    """Bytes holding a stream of ``total_bits`` bits (only the last byte may be partly used)."""
    return (total_bits + 7) // 8


def unpack(data: bytes, bit_offset: int, count: int, bits: int) -> np.ndarray:
    """``count`` signed ``bits``-bit values (int64) read from the stream ``data`` at ``bit_offset``."""
    _check_bits(bits)
    end = bit_offset + count * bits
    if bit_offset < 0 or end > 8 * len(data):
        raise ValueError(f"{count} values of {bits} bits at bit {bit_offset} end at bit {end}, "
                         f"past the {8 * len(data)} bits of the stream")
    first, last = bit_offset // 8, packed_bytes(end)
    raw = np.unpackbits(np.frombuffer(data, np.uint8, count=last - first, offset=first), bitorder="little")
    start = bit_offset - 8 * first
    fields = (raw[start:start + count * bits].reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
    return fields - ((fields >> (bits - 1)) & 1) * (1 << bits)  # sign-extend the two's complement


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bit-width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
