"""Benchmark: Shapley estimation wall time on 1 vs 2 Dask workers, and the Dask path's overhead (issue 5).

    python -m bench.shapley_workers [--project .] [--permutations N] [--chunks K] [--batch 1024]

The game is the default supernet: the project's trained one when ``data/supernet/supernet.pt`` exists
(inputs and params found through the ``shapley`` stage's command in ``dvc.yaml``; the estimator, the number
of permutations and of chunks default to the stage's ``shapley`` and ``fanout`` params, so the in-process
time is the stage's own), otherwise a freshly built ``compact_resnet`` supernet with random weights,
calibration on random data and random α (seeded), scored on a random batch labelled by its own
full-precision model, with 4 antithetic permutations in 4 chunks. The line ``game:`` says which.

Three configurations compute the same permutations in the same ``--chunks`` chunks (so the same number of
value evaluations) and must give bit-identical values:

- ``in-process``: ``shapley_values(..., chunks=k)`` in this process, one torch thread;
- ``dask x1`` / ``dask x2``: a loopback ``LocalCluster`` of 1 or 2 worker processes with one thread each
  (torch: one intra-op thread per worker), the chunks mapped over it and merged with ``combine``.

Times exclude starting the cluster and loading the game on each worker (printed as setup). Printed: wall
time and evaluations/s per configuration, peak RSS of every worker, the speed-up of 2 workers over 1
(target >= 1.6x) and the overhead of the Dask path over in-process for one worker (target <= 10 %).
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPEEDUP_TARGET = 1.6
OVERHEAD_TARGET = 0.10


@dataclass(frozen=True)
class GameSpec:
    """What a worker needs to build the game itself (small and picklable; the supernet never travels)."""

    project: str | None
    batch: int
    seed: int


_GAMES: dict[GameSpec, tuple] = {}


def load_game(spec: GameSpec) -> tuple:
    """``(value_fn, n_players, description, estimator)``, built once per process (one torch thread);
    ``estimator`` holds the stage's ``shapley`` settings: units, chunks and ``walk`` (``ShapleyConfig.method``)."""
    torch.set_num_threads(1)
    if spec not in _GAMES:
        _GAMES[spec] = _project_game(spec) if spec.project else _random_game(spec)
    return _GAMES[spec]


def _project_game(spec: GameSpec) -> tuple:
    from pipelines.dag import stage_command
    from smpq.config import load_params
    from stages.shapley_worker import STAGE, game, stage_inputs

    root = Path(spec.project).resolve()
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    params = load_params(params_path)
    g, cfg = game(params, paths), params.shapley
    estimator = {"permutations": cfg.max_permutations, "chunks": params.fanout.chunks, "walk": cfg.method}
    return g.value_fn, len(g.players), f"trained supernet of {root} ({params.model.name}, " \
                                       f"{cfg.batch_size} search_val samples)", estimator


def _random_game(spec: GameSpec) -> tuple:
    from bench.coalition_eval import build
    from smpq.shapley.game import supernet_game

    supernet, fixed_model, images, _ = build(spec.seed, spec.batch, None)
    with torch.no_grad():
        labels = fixed_model(images).argmax(dim=1)
    value_fn = supernet_game(supernet, images, labels, "top1")
    estimator = {"permutations": 4, "chunks": 4,
                 "walk": {"estimator": "permutation", "antithetic": True, "direction": "remove", "truncation": None}}
    return value_fn, len(supernet.players()), f"fresh compact_resnet supernet, random α, {spec.batch} random " \
                                              "images", estimator


def warm(spec: GameSpec) -> dict:
    """Load the game on a worker; report its torch threads."""
    load_game(spec)
    return {"torch_threads": torch.get_num_threads()}


def chunk(spec: GameSpec, indices: list[int], seed: int):
    from smpq.shapley.estimate import sample_units

    value_fn, n_players, _, estimator = load_game(spec)
    return sample_units(value_fn, n_players, indices, seed=seed, **estimator["walk"])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_process(spec: GameSpec, permutations: int, chunks: int) -> tuple[float, object]:
    from smpq.shapley.estimate import shapley_values

    value_fn, n_players, _, estimator = load_game(spec)
    start = time.perf_counter()
    result = shapley_values(value_fn, n_players, seed=spec.seed, max_permutations=permutations, chunks=chunks,
                            **estimator["walk"])
    return time.perf_counter() - start, result


def on_dask(spec: GameSpec, permutations: int, chunks: int, workers: int) -> dict:
    """Wall time of the chunks on a fresh local cluster (setup timed apart), and each worker's peak RSS."""
    from distributed import Client, LocalCluster

    from pipelines.fanout import local_cluster_kwargs, local_workers
    from smpq.shapley.estimate import combine
    from smpq.shapley.sampling import chunk_indices

    antithetic = load_game(spec)[3]["walk"]["antithetic"]
    ranges = [list(r) for r in chunk_indices(permutations, chunks, antithetic=antithetic)]
    setup = time.perf_counter()
    with local_workers(), LocalCluster(**local_cluster_kwargs(workers)) as cluster, Client(cluster) as client:
        threads = client.run(warm, spec)
        setup = time.perf_counter() - setup
        start = time.perf_counter()
        blocks = client.gather(client.map(chunk, [spec] * len(ranges), ranges, seed=spec.seed, pure=False))
        result = combine(blocks, antithetic=antithetic)
        seconds = time.perf_counter() - start
        rss = client.run(peak_rss_mib)
    return {"seconds": seconds, "setup": setup, "result": result, "rss": sorted(rss.values()),
            "threads": sorted(t["torch_threads"] for t in threads.values())}


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in ("values", "stderr", "trace"))


def main(argv: list[str] | None = None) -> dict:
    """Run by ``python -m``, this file is ``__main__``; the workers must get the importable module's
    functions (pickled by reference, so their game cache lives on in each worker)."""
    if __name__ == "__main__":
        from bench.shapley_workers import main as imported_main

        return imported_main(argv)
    parser = argparse.ArgumentParser(prog="python -m bench.shapley_workers", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project whose trained supernet to use, if it has one")
    parser.add_argument("--permutations", type=int, default=None, help="default: the game's (see above)")
    parser.add_argument("--chunks", type=int, default=None, help="default: the game's (see above)")
    parser.add_argument("--batch", type=int, default=1024, help="value batch of the random-supernet game")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import distributed  # noqa: F401  (its import sets up its loggers; quiet them after it)

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # cluster start/stop chatter
    trained = (Path(args.project) / "data/supernet/supernet.pt").is_file()
    spec = GameSpec(str(Path(args.project).resolve()) if trained else None, args.batch, args.seed)
    _, n_players, description, estimator = load_game(spec)
    walk = estimator["walk"]
    args.permutations = args.permutations or estimator["permutations"]
    args.chunks = args.chunks or estimator["chunks"]
    print(f"game: {description}; {n_players} players, {args.permutations} permutations in {args.chunks} chunks "
          f"({', '.join(f'{k} {v}' for k, v in walk.items())})")
    local_seconds, local = in_process(spec, args.permutations, args.chunks)
    print(f"  in-process: {local_seconds:7.1f} s  {local.n_evaluations / local_seconds:6.1f} evaluations/s  "
          f"({local.n_evaluations} evaluations, peak RSS {peak_rss_mib():.0f} MiB, torch threads 1)")
    runs = {}
    for workers in (1, 2):
        run = runs[workers] = on_dask(spec, args.permutations, args.chunks, workers)
        if not same(run["result"], local):
            raise RuntimeError(f"dask x{workers} gave a different estimate than in-process")
        rate = local.n_evaluations / run["seconds"]
        print(f"  dask x{workers}:    {run['seconds']:7.1f} s  {rate:6.1f} evaluations/s  "
              f"(setup {run['setup']:.1f} s; worker peak RSS {', '.join(f'{r:.0f}' for r in run['rss'])} MiB; "
              f"torch threads {run['threads']})")
    speedup = runs[1]["seconds"] / runs[2]["seconds"]
    overhead = runs[1]["seconds"] / local_seconds - 1
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}x ({'meets' if speedup >= SPEEDUP_TARGET else 'misses'} the "
          f"{SPEEDUP_TARGET}x target)")
    print(f"Dask overhead, 1 worker vs in-process: {overhead:+.1%} "
          f"({'meets' if overhead <= OVERHEAD_TARGET else 'misses'} the {OVERHEAD_TARGET:.0%} target)")
    print("all three estimates identical: yes")
    return {"in_process_seconds": local_seconds, "evaluations": local.n_evaluations, "speedup": speedup,
            "overhead": overhead, "worker_rss_mib": {w: r["rss"] for w, r in runs.items()}}


if __name__ == "__main__":
    main()
