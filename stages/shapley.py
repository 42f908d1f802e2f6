"""Stage ``shapley``: Monte Carlo Shapley value of every bit-width candidate on the trained supernet.

The permutations run in the ``fanout.chunks`` chunks that the Prefect flow fans out over workers, one after
another here, so ``dvc repro`` and the flow write the same outputs (see ``stages.shapley_chunks``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from smpq.shapley import shapley_values
from stages.session import session
from stages.shapley_chunks import SECTIONS, ShapleyPaths, game, parse_stage_args, paths_of, record, write_outputs

log = logging.getLogger("smpq.stage.shapley")


def progress_reporter(bar: tqdm, start: float):
    """Advance the bar and log every ~10% (the bar is silent when DVC captures the output)."""
    def report(done: int, total: int) -> None:
        bar.update(done - bar.n)
        if done == total or done % max(1, total // 10) == 0:
            log.info("shapley: %d/%d permutations, %.0f s", done, total, time.perf_counter() - start)
    return report


def run(params_path: Path, paths: ShapleyPaths) -> dict:
    """All chunks in this process (each memoised on its own, as on a worker); returns the metrics written."""
    g = game(params_path, paths)
    cfg = g.params.shapley
    start = time.perf_counter()
    with tqdm(total=cfg.max_permutations, desc="shapley permutations", disable=None) as bar:
        result = shapley_values(g.value_fn, len(g.players), seed=g.params.seed, max_permutations=cfg.max_permutations,
                                tolerance=cfg.tolerance, chunks=g.params.fanout.chunks,
                                progress=progress_reporter(bar, start), **cfg.walk)
    return write_outputs(g, result, paths, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_stage_args(argv)
    with session("shapley", args, sections=SECTIONS) as s:
        paths = paths_of(args)
        record(s.tracker, run(args.params, paths), paths)


if __name__ == "__main__":
    main()
