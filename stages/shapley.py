"""Stage ``shapley``: Monte Carlo Shapley value of every bit-width candidate on the trained supernet."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from smpq.artifacts import read_json, write_json
from smpq.coalition_game import supernet_game
from smpq.shapley import shapley_values
from stages.inputs import load_prepared, load_supernet
from stages.plots import shapley_convergence, shapley_heatmap
from stages.session import parse_args, session


def value_batch(prepared, cfg, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed, seeded batch of ``search_val`` (never ``test``)."""
    loader = prepared.loader("search_val", batch_size=cfg.batch_size, seed=seed, shuffle=True)
    loader.set_epoch(0)
    return next(iter(loader))


def run(params, *, prepared_dir: Path, pretrain_dir: Path, calibrate_dir: Path, supernet_dir: Path, out: Path,
        results: Path) -> dict:
    prepared = load_prepared(prepared_dir)
    supernet, _ = load_supernet(params, prepared, pretrain_dir, calibrate_dir, supernet_dir / "supernet.pt")
    supernet.eval().freeze()
    cfg = params.shapley
    value_fn = supernet_game(supernet, *value_batch(prepared, cfg, params.seed), value=cfg.value)
    start = time.perf_counter()
    with tqdm(total=cfg.max_permutations, desc="shapley permutations", disable=None) as bar:
        result = shapley_values(value_fn, len(supernet.players()), seed=params.seed,
                                max_permutations=cfg.max_permutations, tolerance=cfg.tolerance,
                                antithetic=cfg.antithetic, truncation=cfg.truncation, direction=cfg.direction,
                                progress=lambda done, total: bar.update(done - bar.n))
    seconds = time.perf_counter() - start
    alpha = read_json(supernet_dir / "alpha.json")
    players = [{"layer": p.layer, "kind": p.kind, "bits": p.bits, "value": float(result.values[i]),
                "stderr": _finite(result.stderr[i]), "samples": int(result.n_samples[i]),
                "alpha_probability": _alpha_probability(alpha, p)} for i, p in enumerate(supernet.players())]
    totals = {"evaluations": result.n_evaluations, "permutations": result.n_permutations, "wall_seconds": seconds,
              "evaluations_per_second": result.n_evaluations / seconds, "v_full": result.v_full,
              "v_empty": result.v_empty, "value": cfg.value, "batch_size": cfg.batch_size,
              "max_stderr": _finite(max(result.stderr))}
    write_json(out / "shapley.json", {"players": players, "totals": totals,
                                      "trace": {"evaluations": [int(e) for e in result.trace_evaluations],
                                                "estimates": [[float(v) for v in row] for row in result.trace]}})
    write_json(results / "metrics.json", totals)
    shapley_convergence(result.trace_evaluations, result.trace, results / "convergence.png")
    shapley_heatmap(players, results / "heatmap.png")
    return totals


def _alpha_probability(alpha: dict, player) -> float:
    group = alpha[player.layer][player.kind]
    return float(group["probabilities"][group["bits"].index(player.bits)])


def _finite(x) -> float | None:
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


def main(argv: list[str] | None = None) -> None:
    args = parse_args("shapley", ["prepared", "pretrain", "calibrate", "supernet", "out", "results"], argv)
    with session("shapley", args, sections=("quant", "shapley")) as s:
        totals = run(s.params, prepared_dir=args.prepared, pretrain_dir=args.pretrain, calibrate_dir=args.calibrate,
                     supernet_dir=args.supernet, out=args.out, results=args.results)
        s.tracker.log_metrics({k: v for k, v in totals.items() if v is not None})
        s.tracker.log_artifact(args.results)
        s.tracker.log_artifact(args.out / "shapley.json")


if __name__ == "__main__":
    main()
