"""The ``shapley`` stage's unit of work, shared by ``python -m stages.shapley`` and the Prefect fan-out.

A run's units (permutations) are cut into the ``fanout.chunks`` ranges of ``chunk_plan``; ``run_chunk``
samples one range on whichever worker holds it (thread, process or Dask worker), with the game built once
per worker thread and kept for its later chunks. Workers get the validated ``Params``, never a file to reload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from smpq.config import Params
from smpq.shapley.estimate import sample_units
from smpq.shapley.game import supernet_game
from smpq.shapley.sampling import Samples, chunk_indices
from stages.inputs import load_prepared
from stages.supernet_inputs import load_supernet

log = logging.getLogger("smpq.stage.shapley")


@dataclass(frozen=True)
class ShapleyPaths:
    """The stage's input and output folders (the ``--<name>`` options of its command in ``dvc.yaml``)."""

    prepared: Path
    pretrain: Path
    calibrate: Path
    supernet: Path
    out: Path
    results: Path

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class Game:
    """The loaded value function and the players in supernet order."""

    value_fn: object
    players: list


def chunk_plan(params: Params) -> list[range]:
    """The unit index ranges of this run, one per chunk (``fanout.chunks`` at most)."""
    return chunk_indices(params.shapley.max_permutations, params.fanout.chunks, antithetic=params.shapley.antithetic)


def value_batch(prepared, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed, seeded batch of ``search_val`` (never ``test``)."""
    loader = prepared.loader("search_val", batch_size=params.shapley.batch_size, seed=params.seed, shuffle=True)
    loader.set_epoch(0)
    return next(iter(loader))


def build_game(params: Params, paths: ShapleyPaths) -> Game:
    """Load the trained supernet, freeze it, and wrap it as the coalition game on the value batch."""
    prepared = load_prepared(paths.prepared)
    supernet, _ = load_supernet(params, prepared, paths.pretrain, paths.calibrate, paths.supernet / "supernet.pt")
    supernet.eval().freeze()
    value_fn = supernet_game(supernet, *value_batch(prepared, params), value=params.shapley.value)
    return Game(value_fn, supernet.players())


_GAMES: dict[int, tuple[tuple, Game]] = {}  # thread id -> (inputs key, game): the last game of each thread
_GAMES_LOCK = threading.Lock()


def game(params: Params, paths: ShapleyPaths) -> Game:
    """The game for these inputs, built once per thread (a coalition is module state of the supernet) and
    rebuilt when the params or the checkpoint change (a long-lived Dask worker serves several runs)."""
    checkpoint = (paths.supernet / "supernet.pt").stat()
    key = (params, paths, checkpoint.st_size, checkpoint.st_mtime_ns)
    thread = threading.get_ident()
    with _GAMES_LOCK:
        cached = _GAMES.get(thread)
    if cached is not None and cached[0] == key:
        return cached[1]
    built = build_game(params, paths)
    with _GAMES_LOCK:
        _GAMES[thread] = (key, built)
    return built


def release_games() -> None:
    """Drop every cached game (the flow's process calls this once the fan-out is written)."""
    with _GAMES_LOCK:
        _GAMES.clear()


def run_chunk(params: Params, paths: ShapleyPaths, indices: Sequence[int]) -> Samples:
    """The rows of units ``indices`` (one chunk of the plan), memoised within the chunk."""
    g = game(params, paths)
    start = time.perf_counter()
    samples = sample_units(g.value_fn, len(g.players), indices, seed=params.seed, **params.shapley.method)
    log.info("Shapley chunk [%d, %d]: %d units, %d evaluations, %.1f s", indices[0], indices[-1], len(indices),
             samples.base_evaluations + int(samples.evaluations.sum()), time.perf_counter() - start)
    return samples


def one_torch_thread() -> None:
    """Worker-process initializer: one intra-op thread per worker, so N workers use N cores, not N²."""
    torch.set_num_threads(1)
