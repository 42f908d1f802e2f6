"""The ``shapley`` stage's unit of work, shared by ``python -m stages.shapley`` and the Prefect fan-out.

A run's units (permutations) are cut into the ``fanout.chunks`` ranges of ``chunk_plan``; ``run_chunk``
samples one range on whichever worker holds it (thread, process or Dask worker), with the game built once
per worker thread and kept for its later chunks. Workers get the validated ``Params``, never a file to reload.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from smpq.config import Params
from smpq.device import resolve_device
from smpq.errors import ConfigError
from smpq.shapley.estimate import run_units, sample_units
from smpq.shapley.game import supernet_game
from smpq.shapley.sampling import Samples, chunk_indices
from smpq.supernet import player_groups
from stages.inputs import MODEL_FILE, build_model, load_prepared
from stages.session import parse_args
from stages.supernet_inputs import load_supernet

log = logging.getLogger("smpq.stage.shapley")

STAGE = "shapley"


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
    """The loaded value function, the players in supernet order and their (layer, kind) groups."""

    value_fn: object
    players: list
    groups: list


def stage_inputs(cmd: str, root: Path) -> tuple[Path, ShapleyPaths]:
    """``(params file, paths)`` of the stage command ``cmd`` from ``dvc.yaml``, resolved against ``root``."""
    words = shlex.split(cmd)
    module = f"stages.{STAGE}"
    if module not in words:
        raise ConfigError(f"dvc.yaml: the {STAGE} stage's cmd does not run 'python -m {module}': {cmd!r}")
    try:
        args = parse_args(STAGE, ShapleyPaths.names(), words[words.index(module) + 1:])
    except SystemExit:  # argparse has printed what is wrong with the command
        raise ConfigError(f"dvc.yaml: the {STAGE} stage's cmd has bad options: {cmd!r}") from None
    return root / args.params, ShapleyPaths(*(root / getattr(args, name) for name in ShapleyPaths.names()))


def chunk_plan(params: Params) -> list[range]:
    """The unit index ranges of this run, one per chunk (``fanout.chunks`` at most)."""
    cfg = params.shapley
    units, antithetic = run_units(cfg.max_permutations, cfg.estimator, cfg.antithetic)
    return chunk_indices(units, params.fanout.chunks, antithetic=antithetic)


def seeded_batch(prepared, params: Params, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images of ``split`` drawn with the run's seed: value batches come from ``search_val`` (never
    ``test``), BN recalibration batches (``shapley.bn_recalibration``) from ``train``; on ``runtime.device``."""
    loader = prepared.loader(split, batch_size=size, seed=params.seed, shuffle=True)
    loader.set_epoch(0)
    return tuple(t.to(resolve_device(params.runtime.device)) for t in next(iter(loader)))  # the game's device


@torch.no_grad()
def full_precision_logits(params: Params, prepared, paths: ShapleyPaths, images: torch.Tensor) -> torch.Tensor:
    """Logits of the pretrained float model, the reference of the ``neg_kl`` value (computed once)."""
    model = build_model(params, prepared, paths.pretrain / MODEL_FILE).eval().to(images.device)
    return torch.cat([model(chunk) for chunk in images.split(params.shapley.batch_size)])


def build_game(params: Params, paths: ShapleyPaths) -> Game:
    """Load the trained supernet, freeze it, and wrap it as the coalition game on the value batches."""
    cfg = params.shapley
    prepared = load_prepared(paths.prepared)
    images, labels = seeded_batch(prepared, params, "search_val", cfg.batch_size * cfg.batches)
    supernet, _ = load_supernet(params, prepared, paths.pretrain, paths.calibrate, paths.supernet / "supernet.pt")
    supernet.to(images.device).eval().freeze().set_empty_group(cfg.empty_group, cfg.reference_bits)
    recal = (seeded_batch(prepared, params, "train", cfg.batch_size * cfg.bn_recalibration)[0].split(cfg.batch_size)
             if cfg.bn_recalibration else ())
    fp_logits = full_precision_logits(params, prepared, paths, images) if cfg.value == "neg_kl" else None
    value_fn = supernet_game(supernet, images, labels, cfg.value, fp_logits=fp_logits, batch_size=cfg.batch_size,
                             recalibration=recal, coalitions_per_forward=cfg.coalitions_per_forward)
    return Game(value_fn, supernet.players(), player_groups(supernet.players()))


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
    if cached and cached[0] == key:
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
    samples = sample_units(g.value_fn, len(g.players), indices, seed=params.seed, groups=g.groups,
                           **params.shapley.method)
    log.info("Shapley chunk [%d, %d]: %d units, %d evaluations, %.1f s", indices[0], indices[-1], len(indices),
             samples.base_evaluations + int(samples.evaluations.sum()), time.perf_counter() - start)
    return samples


def one_torch_thread() -> None:
    """Worker-process initializer: one intra-op thread per worker, so N workers use N cores, not N²."""
    torch.set_num_threads(1)
