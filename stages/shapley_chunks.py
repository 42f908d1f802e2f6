"""The ``shapley`` stage in reusable pieces, shared by ``python -m stages.shapley`` and the Prefect fan-out.

The permutations are cut into the ``fanout.chunks`` ranges of ``smpq.shapley.chunk_indices``. The DVC stage
walks them one after another in its own process (``shapley_values(..., chunks=k)``); the flow maps them over
a task runner with ``run_chunk`` (threads, processes or Dask workers) and merges them with ``finish``. Both
write the same files: ``data/shapley/shapley.json`` byte for byte (it holds no timings), and
``results/shapley/metrics.json`` up to its two timing keys. Paths come from the stage's command in
``dvc.yaml`` (``stage_inputs``), parsed with the stage's own argument parser.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from smpq.artifacts import read_json, write_json
from smpq.coalition_game import supernet_game
from smpq.config import Params, as_flat_dict, load_params
from smpq.shapley import PermutationSamples, ShapleyResult, chunk_indices, combine, sample_permutations
from stages.inputs import load_prepared, load_supernet
from stages.plots import shapley_convergence, shapley_heatmap
from stages.session import parse_args
from stages.tracking import Tracker, stage_run

log = logging.getLogger("smpq.stage.shapley")

STAGE = "shapley"
SECTIONS = ("quant", "shapley", "fanout")  # the params sections logged with the stage's MLflow run
TIMINGS = ("wall_seconds", "evaluations_per_second")  # the only keys that differ between two equal runs


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

    def under(self, root: Path) -> "ShapleyPaths":
        """Relative paths taken from ``root`` (DVC runs commands in the project folder)."""
        return ShapleyPaths(*(root / getattr(self, name) for name in self.names()))


@dataclass
class Game:
    """The loaded value function: params, ``value_fn(mask)`` and the players in supernet order."""

    params: Params
    value_fn: object
    players: list


def parse_stage_args(argv: Sequence[str] | None = None):
    """The stage's own command line: ``--params`` plus one ``--<path>`` per ``ShapleyPaths`` field."""
    return parse_args(STAGE, ShapleyPaths.names(), list(argv) if argv is not None else None)


def paths_of(args) -> ShapleyPaths:
    return ShapleyPaths(*(getattr(args, name) for name in ShapleyPaths.names()))


def stage_inputs(cmd: str, root: Path) -> tuple[Path, ShapleyPaths]:
    """``(params file, paths)`` of the stage command ``cmd`` from ``dvc.yaml``, resolved against ``root``."""
    words = shlex.split(cmd)
    module = f"stages.{STAGE}"
    if module not in words:
        raise ValueError(f"dvc.yaml: the {STAGE} stage's cmd does not run 'python -m {module}': {cmd!r}")
    try:
        args = parse_stage_args(words[words.index(module) + 1:])
    except SystemExit:  # argparse has printed what is wrong with the command
        raise ValueError(f"dvc.yaml: the {STAGE} stage's cmd has bad options: {cmd!r}") from None
    return root / args.params, paths_of(args).under(root)


def chunk_plan(params: Params) -> list[range]:
    """The permutation index ranges of this run, one per chunk (``fanout.chunks`` at most)."""
    cfg = params.shapley
    return chunk_indices(cfg.max_permutations, params.fanout.chunks, antithetic=cfg.antithetic)


def value_batch(prepared, cfg, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed, seeded batch of ``search_val`` (never ``test``)."""
    loader = prepared.loader("search_val", batch_size=cfg.batch_size, seed=seed, shuffle=True)
    loader.set_epoch(0)
    return next(iter(loader))


def build_game(params: Params, paths: ShapleyPaths) -> Game:
    """Load the trained supernet, freeze it, and wrap it as the coalition game on the value batch."""
    prepared = load_prepared(paths.prepared)
    supernet, _ = load_supernet(params, prepared, paths.pretrain, paths.calibrate, paths.supernet / "supernet.pt")
    supernet.eval().freeze()
    value_fn = supernet_game(supernet, *value_batch(prepared, params.shapley, params.seed), value=params.shapley.value)
    return Game(params, value_fn, supernet.players())


_GAMES: dict[int, tuple[tuple, Game]] = {}  # thread id -> (inputs key, game): the last game of each thread
_GAMES_LOCK = threading.Lock()


def game(params_path: str | Path, paths: ShapleyPaths) -> Game:
    """The game for these inputs, built once per process and thread and reused by later chunks.

    One per thread because a coalition is module state of the supernet (threads must not share it). The
    key holds the params file's content and the checkpoint's size and time stamp, so a long-lived worker
    (a Dask cluster serving several flow runs) rebuilds the game when either changes.
    """
    params_path = Path(params_path)
    checkpoint = (paths.supernet / "supernet.pt").stat()
    key = (hashlib.sha256(params_path.read_bytes()).hexdigest(), paths, checkpoint.st_size, checkpoint.st_mtime_ns)
    thread = threading.get_ident()
    with _GAMES_LOCK:
        cached = _GAMES.get(thread)
    if cached is not None and cached[0] == key:
        return cached[1]
    built = build_game(load_params(params_path), paths)
    with _GAMES_LOCK:
        _GAMES[thread] = (key, built)
    return built


def release_games() -> None:
    """Drop every cached game (the flow's process calls this once the fan-out is written)."""
    with _GAMES_LOCK:
        _GAMES.clear()


def run_chunk(params_path: str | Path, paths: ShapleyPaths, indices: Sequence[int]) -> PermutationSamples:
    """Marginals of permutations ``indices`` (one chunk of the plan), memoised within the chunk."""
    g = game(params_path, paths)
    start = time.perf_counter()
    samples = sample_permutations(g.value_fn, len(g.players), indices, seed=g.params.seed, **g.params.shapley.walk)
    log.info("Shapley chunk %s: %d permutations, %d evaluations, %.1f s", f"[{indices[0]}, {indices[-1]}]",
             len(indices), samples.base_evaluations + int(samples.evaluations.sum()), time.perf_counter() - start)
    return samples


def finish(params_path: str | Path, paths: ShapleyPaths, blocks: Sequence[PermutationSamples],
           seconds: float) -> dict:
    """Merge the chunks (stopping rule applied as in the sequential run) and write the stage's outputs."""
    g = game(params_path, paths)
    cfg = g.params.shapley
    return write_outputs(g, combine(blocks, antithetic=cfg.antithetic, tolerance=cfg.tolerance), paths, seconds)


def write_outputs(g: Game, result: ShapleyResult, paths: ShapleyPaths, seconds: float) -> dict:
    """``shapley.json`` (players, totals, trace), ``metrics.json`` (totals and timings) and the two plots."""
    cfg = g.params.shapley
    alpha = read_json(paths.supernet / "alpha.json")
    players = [{"layer": p.layer, "kind": p.kind, "bits": p.bits, "value": float(result.values[i]),
                "stderr": _finite(result.stderr[i]), "samples": int(result.n_samples[i]),
                "alpha_probability": _alpha_probability(alpha, p)} for i, p in enumerate(g.players)]
    totals = {"evaluations": result.n_evaluations, "permutations": result.n_permutations,
              "chunks": len(chunk_plan(g.params)), "v_full": result.v_full, "v_empty": result.v_empty,
              "value": cfg.value, "batch_size": cfg.batch_size, "max_stderr": _finite(max(result.stderr))}
    write_json(paths.out / "shapley.json", {"players": players, "totals": totals,
                                            "trace": {"evaluations": [int(e) for e in result.trace_evaluations],
                                                      "estimates": [[float(v) for v in row] for row in result.trace]}})
    metrics = totals | {"wall_seconds": seconds, "evaluations_per_second": result.n_evaluations / max(seconds, 1e-9)}
    write_json(paths.results / "metrics.json", metrics)
    shapley_convergence(result.trace_evaluations, result.trace, paths.results / "convergence.png")
    shapley_heatmap(players, paths.results / "heatmap.png")
    return metrics


def logged_params(params: Params) -> dict:
    """The flat params the stage's MLflow run records (seed plus ``SECTIONS``)."""
    flat = {"seed": params.seed}
    for section in SECTIONS:
        flat.update(as_flat_dict(getattr(params, section), section))
    return flat


def record(tracker: Tracker, metrics: dict, paths: ShapleyPaths) -> None:
    """Numeric metrics plus the results folder and ``shapley.json`` as artifacts of the stage's run."""
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
    tracker.log_artifact(paths.results)
    tracker.log_artifact(paths.out / "shapley.json")


@contextmanager
def tracked(params_path: str | Path, root: Path) -> Iterator[tuple[Params, Tracker]]:
    """Load params and open the stage's MLflow child run (FAILED on an exception), as the stage does."""
    params = load_params(params_path)
    with stage_run(STAGE, params.tracking, root) as tracker:
        tracker.log_params(logged_params(params))
        yield params, tracker


def one_torch_thread() -> None:
    """Worker-process initializer: one intra-op thread per worker, so N workers use N cores, not N²."""
    torch.set_num_threads(1)


def _alpha_probability(alpha: dict, player) -> float:
    group = alpha[player.layer][player.kind]
    return float(group["probabilities"][group["bits"].index(player.bits)])


def _finite(x) -> float | None:
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None
