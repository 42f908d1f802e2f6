"""Benchmark workspaces: stage folders of one run and the default pipeline's stages called in-process.

The benchmarks re-run the stages of ``dvc.yaml`` with modified params (another seed, another budget, a tiny
configuration) without touching the project's own ``data/`` and ``results/``: every stage's ``run`` writes
into a ``Workspace`` under a scratch folder (default ``/tmp/smpq_bench``). In-process calls skip MLflow
tracking (that lives in the stage entry points), so benchmark runs never land in the project's store.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smpq.config import Params, load_params
from smpq.shapley import shapley_values
from stages import calibrate, finetune, prepare, pretrain, select, supernet
from stages.shapley_chunks import ShapleyPaths, build_game, write_outputs

PROJECT = Path(__file__).resolve().parents[1]
SCRATCH = Path("/tmp/smpq_bench")
SEARCH_STAGES = ("prepare", "pretrain", "calibrate", "supernet", "shapley")

# A configuration small enough for the tests (seconds, not minutes); the same shape as the default.
TINY: dict[str, Any] = {
    "data.train_size": 1000, "data.search_val_size": 256, "data.test_size": 500,
    "pretrain.epochs": 1, "pretrain.lr": 0.05, "calibrate.batches": 2, "calibrate.batch_size": 64,
    "calibrate.max_activation_samples": 1000,
    "supernet.epochs": 1, "supernet.samples_per_epoch": 256,
    "shapley.batch_size": 64, "shapley.max_permutations": 2,
    "finetune.epochs": 1, "finetune.samples_per_epoch": 256,
}


def default_params(path: Path | None = None) -> Params:
    """The project's ``params.yaml`` (validated), the baseline every benchmark starts from."""
    return load_params(path or PROJECT / "params.yaml")


def override(params: Any, values: Mapping[str, Any]) -> Any:
    """``params`` with dotted keys replaced (``{"select.budget.avg_bits": 2.5}``) on the frozen config objects."""
    for dotted, value in values.items():
        head, _, rest = dotted.partition(".")
        new = override(getattr(params, head), {rest: value}) if rest else value
        params = dataclasses.replace(params, **{head: new})
    return params


@dataclass(frozen=True)
class Workspace:
    """Where one benchmark run keeps its stage outputs: ``root/data/<stage>`` and ``root/results/<stage>``."""

    root: Path

    def data(self, stage: str) -> Path:
        return self.root / "data" / stage

    def results(self, stage: str) -> Path:
        return self.root / "results" / stage

    def select_dirs(self, tag: str) -> tuple[Path, Path]:
        return self.data(f"select/{tag}"), self.results(f"select/{tag}")

    def finetune_dirs(self, tag: str, method: str) -> tuple[Path, Path]:
        return self.data(f"finetune/{tag}/{method}"), self.results(f"finetune/{tag}/{method}")

    def missing(self) -> list[Path]:
        """Inputs of the Shapley game that are absent (prepared splits, FP model, calibration, supernet)."""
        needed = [self.data("prepared") / "card.json", self.data("pretrain") / "model.pt",
                  self.data("calibrate") / "cost_table.json", self.data("supernet") / "supernet.pt"]
        return [path for path in needed if not path.exists()]


def project_workspace() -> Workspace:
    """The default pipeline's own folders (``data/``, ``results/`` of the project): read them, never write."""
    return Workspace(PROJECT)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def reuse_stages(source: Workspace, ws: Workspace) -> None:
    """Copy the outputs of prepare..supernet from ``source`` into ``ws`` (to rerun only shapley onward)."""
    if source.missing():
        raise FileNotFoundError(f"{source.root}: nothing to reuse, missing {[str(p) for p in source.missing()]}; "
                                "run the benchmark without reuse first")
    for data, results in (("prepared", None), ("pretrain", "pretrain"), ("calibrate", "calibrate"),
                          ("supernet", "supernet")):
        shutil.copytree(source.data(data), ws.data(data), dirs_exist_ok=True)
        if results and source.results(results).exists():
            shutil.copytree(source.results(results), ws.results(results), dirs_exist_ok=True)


def run_search(params: Params, ws: Workspace, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """prepare → pretrain → calibrate → supernet → shapley into ``ws`` (except ``skip``); seconds per stage."""
    d, r = ws.data, ws.results
    calls = {
        "prepare": lambda: prepare.run(params, raw_dir=ws.root / "raw", out=d("prepared")),
        "pretrain": lambda: pretrain.run(params, prepared_dir=d("prepared"), out=d("pretrain"), results=r("pretrain")),
        "calibrate": lambda: calibrate.run(params, prepared_dir=d("prepared"), pretrain_dir=d("pretrain"),
                                           out=d("calibrate"), results=r("calibrate")),
        "supernet": lambda: supernet.run(params, prepared_dir=d("prepared"), pretrain_dir=d("pretrain"),
                                         calibrate_dir=d("calibrate"), out=d("supernet"), results=r("supernet")),
        "shapley": lambda: run_shapley(params, ws),
    }
    return {stage: timed(calls[stage])[1] for stage in SEARCH_STAGES if stage not in skip}


def shapley_paths(ws: Workspace) -> ShapleyPaths:
    """The ``shapley`` stage's inputs and outputs inside ``ws``."""
    return ShapleyPaths(ws.data("prepared"), ws.data("pretrain"), ws.data("calibrate"), ws.data("supernet"),
                        ws.data("shapley"), ws.results("shapley"))


def load_game(params: Params, ws: Workspace, batch_size: int | None = None):
    """``(value_fn, players)``: the frozen trained supernet of ``ws`` as the stage's coalition game (SPEC §3.3)."""
    if batch_size is not None:
        params = override(params, {"shapley.batch_size": batch_size})
    g = build_game(params, shapley_paths(ws))
    return g.value_fn, g.players


def run_shapley(params: Params, ws: Workspace) -> dict:
    """The ``shapley`` stage on ``ws``: the same game, chunks and output files as ``python -m stages.shapley``."""
    cfg = params.shapley
    paths = shapley_paths(ws)
    g = build_game(params, paths)
    result, seconds = timed(shapley_values, g.value_fn, len(g.players), seed=params.seed,
                            max_permutations=cfg.max_permutations, tolerance=cfg.tolerance,
                            chunks=params.fanout.chunks, **cfg.walk)
    return write_outputs(g, result, paths, seconds)


def run_select(params: Params, ws: Workspace, tag: str) -> dict:
    """The select stage at ``params.select.budget``; its summary (per method: GBitOps, slack, policy)."""
    out, results = ws.select_dirs(tag)
    return select.run(params, calibrate_dir=ws.data("calibrate"), supernet_dir=ws.data("supernet"),
                      shapley_dir=ws.data("shapley"), out=out, results=results)


def run_finetune(params: Params, ws: Workspace, tag: str, method: str, select_tag: str | None = None) -> dict:
    """QAT of ``method``'s policy from selection ``select_tag`` (default ``tag``); test top-1, GBitOps, MB."""
    out, results = ws.finetune_dirs(tag, method)
    metrics, seconds = timed(finetune.run, params, method, prepared_dir=ws.data("prepared"),
                             pretrain_dir=ws.data("pretrain"), calibrate_dir=ws.data("calibrate"),
                             select_dir=ws.select_dirs(select_tag or tag)[0], out=out, results=results)
    return {**metrics, "wall_seconds": seconds}


def set_threads(count: int) -> None:
    """Benchmarks share a 2-core machine: pin torch's intra-op threads (2 for benches, 1 in tests)."""
    torch.set_num_threads(count)
