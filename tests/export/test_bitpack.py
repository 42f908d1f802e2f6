"""Bit packing: exact round trips at every width, byte counts, and the documented bit order."""

import numpy as np
import pytest

from smpq.export.bitpack import pack, packed_bytes, signed_range, unpack


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("count", [1, 7, 13, 1001])
def test_round_trip_at_every_width_on_odd_lengths(bits, count):
    low, high = signed_range(bits)
    values = np.random.default_rng(bits * 1000 + count).integers(low, high, endpoint=True, size=count)
    values[0], values[-1] = low, high  # both ends of the grid
    data, offsets = pack([(values, bits)])
    assert offsets == [0] and len(data) == packed_bytes(count * bits) == -(-count * bits // 8)
    restored = unpack(data, 0, count, bits)
    assert restored.dtype == np.int64 and np.array_equal(restored, values)


def test_runs_of_mixed_widths_share_one_stream_without_padding():
    rng = np.random.default_rng(0)
    runs = [(rng.integers(*signed_range(b), endpoint=True, size=n), b) for b, n in [(3, 7), (2, 9), (8, 5), (5, 13)]]
    data, offsets = pack(runs)
    assert offsets == [0, 21, 39, 79]  # each run starts at the bit where the previous one ended
    assert len(data) == packed_bytes(79 + 65) == 18
    for (values, bits), offset in zip(runs, offsets):
        assert np.array_equal(unpack(data, offset, len(values), bits), values)


def test_three_bit_values_cross_byte_boundaries_lsb_first():
    data, _ = pack([(np.array([1, -1, 2]), 3)])  # 001, 111, 010 as two's complement, LSB first
    assert data == bytes([0b10111001, 0b0])  # stream 1 0 0 | 1 1 1 | 0 1 · 0: the third value crosses the byte


def test_values_outside_the_grid_and_bad_widths_are_refused():
    with pytest.raises(ValueError, match=r"integers in \[-2, 1\] to pack at 2 bits"):
        pack([(np.array([0, 2]), 2)])
    with pytest.raises(ValueError, match="bit-width must be an integer in"):
        pack([(np.array([0]), 1)])
    with pytest.raises(ValueError, match="past the 8 bits of the stream"):
        unpack(b"\x00", 4, 3, 2)
