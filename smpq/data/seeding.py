"""Independent random streams derived from one explicit seed, so no code touches a global RNG.

A stream is named by integers (e.g. ``(seed, epoch, STREAM_ORDER)``); ``numpy.random.SeedSequence``
mixes them, so nearby seeds or epochs still give unrelated streams.
"""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed determined by ``seed`` and the stream keys (non-negative integers)."""
    state = np.random.SeedSequence([int(seed), *(int(k) for k in stream)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy generator for the stream ``(seed, *stream)``."""
    return np.random.default_rng(derive_seed(seed, *stream))


def torch_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for the stream ``(seed, *stream)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *stream))
