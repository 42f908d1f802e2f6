"""Prefix reuse (SPEC §3.3): coalitions that differ only inside one group share every activation computed
before that group's layer runs, so those are computed once and replayed.

One forward *records* the output of every compute unit (each conv/linear layer, quantized or not, and every
other leaf module) in execution order; a later forward *replays* the outputs of the units called before a
given module instead of running them, and computes from there on. Replayed tensors are the recorded ones, not
copies (a copy of every activation cost a third of the saving): if the model changes a unit's output in place
(``ReLU(inplace=True)``, ``out += x``), the recording forward shows it by the tensor's version counter, and
the replay then switches to copies for good, so the record can never be corrupted. The functional glue between
modules (additions of residual blocks, flattening) runs as usual. Valid for any model whose call sequence does
not depend on the coalition, which holds for the supernet: a coalition changes values, never control flow.
Replayed results are bit-identical to a full forward, because every computed unit sees exactly the inputs it
would have seen.

Batched variants (``replay_many``): K variants of the model that differ only in the ``starts`` units (the
coalitions of one group) run as one forward of K·B images: the replayed outputs are tiled K times, each varying
unit runs once per variant on its B-image chunk (set up by ``configure(k)``), and every later unit runs once
on all K·B images, so an accelerator gets K times larger kernels per launch. The varying units see exactly the
inputs they would have seen; the later units see a larger batch, whose kernels may round differently, so
variant k's output equals ``replay`` under variant k up to float rounding (bit for bit where the kernels do
not depend on the batch size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def compute_units(model: nn.Module) -> list[nn.Module]:
    """Modules replayed as a whole: conv/linear layers (with their quantizers inside) and other leaves."""
    units, stack = [], [model]
    while stack:
        module = stack.pop()
        children = list(module.children())
        if isinstance(module, (nn.Conv2d, nn.Linear)) or not children:
            units.append(module)
        else:
            stack.extend(reversed(children))
    return units


class PrefixReplay:
    """Record one forward's unit outputs, then run forwards that replay the units called before ``start``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._units = [u for u in compute_units(model) if u is not model]
        self._outputs: list[tuple[object, tuple]] = []  # (unit output, its version counters when recorded)
        self._first_call: dict[int, int] = {}
        self._stop = 0
        self._calls = 0
        self._recording = False
        self._copies = False  # set for good once the model is seen changing a recorded output in place
        self._tiles = 1  # > 1 inside replay_many: variants run side by side on K·B images
        self._varying: set[int] = set()
        self._configure: Callable[[int], None] | None = None

    @torch.no_grad()
    def record(self, x: torch.Tensor) -> torch.Tensor:
        """A full forward whose unit outputs are kept for ``replay``."""
        self._outputs, self._first_call = [], {}
        self._recording, self._stop = True, 0
        try:
            with self._patched():
                out = self.model(x)
        finally:
            self._recording = False
        if not self._copies and any(_version(v) != version for v, version in self._outputs):
            self._copies = True  # in-place code touched a recorded output: record again, keeping copies
            return self.record(x)
        return out

    @torch.no_grad()
    def replay(self, x: torch.Tensor, starts: Sequence[nn.Module]) -> torch.Tensor:
        """A forward that reuses the recorded outputs of every unit called before the first of ``starts``
        runs (no start: the whole recorded forward is replayed)."""
        missing = [type(m).__name__ for m in starts if id(m) not in self._first_call]
        if missing or not self._outputs:
            raise ValueError(f"{missing or 'nothing'} was not called in the recorded forward; record first")
        self._stop = min((self._first_call[id(m)] for m in starts), default=len(self._outputs))
        with self._patched():
            return self.model(x)

    @torch.no_grad()
    def replay_many(self, x: torch.Tensor, starts: Sequence[nn.Module], variants: int,
                    configure: Callable[[int], None]) -> torch.Tensor:
        """Logits [variants · B, ...] of ``variants`` model variants in one forward: rows k·B to (k+1)·B are
        variant k's, which differs from the recorded model only in the ``starts`` units (``configure(k)``
        sets it up; the last variant stays set). Needs a recorded forward of the same ``x``."""
        if variants < 1:
            raise ValueError(f"replay_many needs at least one variant, got {variants}")
        self._tiles, self._varying, self._configure = variants, {id(m) for m in starts}, configure
        try:
            return self.replay(_tile(x, variants), starts)
        finally:
            self._tiles, self._varying, self._configure = 1, set(), None

    def recorded_bytes(self) -> int:
        """Bytes of the recorded unit outputs: an upper bound on one variant's activations in ``replay_many``."""
        return sum(t.nbytes for value, _ in self._outputs for t in _tensors(value))

    @contextmanager
    def _patched(self) -> Iterator[None]:
        self._calls = 0
        for unit in self._units:
            unit.forward = self._wrapped(unit, unit.forward)
        try:
            yield
        finally:
            for unit in self._units:
                del unit.forward  # the instance attribute set above; the class's forward shows again

    def _wrapped(self, unit: nn.Module, forward: Callable) -> Callable:
        def call(*args, **kwargs):
            index = self._calls
            self._calls += 1
            if index < self._stop:
                value = self._outputs[index][0]
                if self._tiles > 1:
                    return _tile(value, self._tiles)  # a new tensor: the record stays untouched
                return _copy(value) if self._copies else value
            if self._tiles > 1 and id(unit) in self._varying:
                return self._per_variant(forward, args, kwargs)
            out = forward(*args, **kwargs)
            if self._recording:
                kept = _copy(out) if self._copies else out
                self._outputs.append((kept, _version(kept)))
                self._first_call.setdefault(id(unit), index)
            return out
        return call


    def _per_variant(self, forward: Callable, args: tuple, kwargs: dict) -> object:
        """A varying unit under each variant on that variant's chunk of its K·B inputs, concatenated."""
        chunks = [a.chunk(self._tiles) if isinstance(a, torch.Tensor) else None for a in args]
        outputs = []
        for k in range(self._tiles):
            self._configure(k)
            outputs.append(forward(*(a if c is None else c[k] for a, c in zip(args, chunks)), **kwargs))
        return torch.cat(outputs)


def _tile(value: object, times: int) -> object:
    """``value`` repeated ``times`` along the batch dimension (tensors, or tuples of them)."""
    if isinstance(value, torch.Tensor):
        return value.repeat(times, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple):
        return tuple(_tile(v, times) for v in value)
    return value


def _tensors(value: object) -> list[torch.Tensor]:
    """The tensors of a unit output (a tensor, or tuples of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def _version(value: object) -> tuple:
    """The in-place version counters of a unit output (tensors, or tuples of them)."""
    return tuple(t._version for t in _tensors(value))


def _copy(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value
