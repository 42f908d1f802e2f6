"""Benchmark: does a trained supernet's Shapley game reward precision, or the α mixture it was trained on?

docs/RESULTS.md §0h found `mobilenet_v2` supernets whose all-8-bit coalition v(∅) is −13 to −17 nats of KL
while the full mixture is −0.1, and whose games value 2-bit above 8-bit in most groups. This bench tests that
diagnosis and the game options that might repair it, on trained project copies (read only; e.g. the
``seed<n>`` copies of ``bench.methods``). For each copy and each game variant (``shapley`` overrides) it
builds the ``shapley`` stage's own game and reports:

- v(full mixture) and v(∅) (every group at its empty-group quantizer): how much the network depends on the
  mixture it was trained under;
- the exact within-group Shapley values (SPEC §3.3 ``within_group``: every other group at its full mixture) of
  the groups of ``--layers`` layers evenly spaced over the network, and in how many of them the highest
  candidate out-values the lowest (φ(8) > φ(2)), per kind: whether the game ranks precision the right way.

The ``recorded`` row is the copy's own ``shapley.json`` (the stage's game, no evaluation). A ``default``
variant (no overrides, ``--variant default:``) recomputes it on the sampled groups as a control: the largest
difference to the recorded values is printed.

    python -m bench.mixture_dependence COPY... [--layers 4] [--variant NAME:KEY=VALUE,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipelines.dag import stage_command
from smpq.artifacts import read_json, write_json
from smpq.config import load_params
from smpq.shapley.owen import group_masks, shapley_matrix
from smpq.supernet.players import Player, player_groups
from stages.shapley_worker import STAGE, build_game, stage_inputs

VARIANTS = {"fp_reference": {"reference_bits": None}, "bn_recalibration_8": {"bn_recalibration": 8}}


def parse_variant(spec: str) -> tuple[str, dict]:
    """``"fp:reference_bits=null,batches=2"`` -> ``("fp", {"reference_bits": None, "batches": 2})``."""
    name, _, body = spec.partition(":")
    pairs = [item.partition("=") for item in body.split(",") if item]
    if not name or any(not eq for _, eq, _ in pairs):
        raise SystemExit(f"error: --variant expects NAME:KEY=VALUE,..., got {spec!r}")
    return name, {key: yaml.safe_load(value) for key, _, value in pairs}


def sampled_groups(players, groups, layers: int) -> list[int]:
    """Indices of the (layer, kind) groups of ``layers`` layers evenly spaced over the network."""
    names = list(dict.fromkeys(players[g[0]].layer for g in groups))
    picked = {names[int(i)] for i in np.linspace(0, len(names) - 1, min(layers, len(names))).round()}
    return [i for i, g in enumerate(groups) if players[g[0]].layer in picked]


def summary(v_full: float, v_empty: float, groups: dict[str, dict[int, float]], seconds: float, **extra) -> dict:
    """A row: the values, and per kind in how many sampled groups the highest candidate out-values the lowest."""
    right = {kind: [phi[max(phi)] > phi[min(phi)] for key, phi in groups.items() if key.endswith(f"/{kind}")]
             for kind in ("w", "a")}
    return {**extra, "v_full": v_full, "v_empty": v_empty, "groups": groups,
            "high_above_low": {kind: [sum(r), len(r)] for kind, r in right.items()}, "seconds": seconds}


def recorded(root: Path, layers: int) -> dict:
    """The row of the copy's recorded ``shapley.json``, on the same sampled groups (no evaluation)."""
    record = read_json(root / "data" / "shapley" / "shapley.json")
    players = [Player(p["layer"], p["kind"], p["bits"]) for p in record["players"]]
    groups = player_groups(players)
    sampled = {f"{players[groups[g][0]].layer}/{players[groups[g][0]].kind}":
               {players[m].bits: record["players"][m]["value"] for m in groups[g]}
               for g in sampled_groups(players, groups, layers)}
    return summary(record["totals"]["v_full"], record["totals"]["v_empty"], sampled, 0.0, overrides=None)


def within_group(game, index: int) -> dict[int, float]:
    """``{bits: φ}`` of one group, exact over its 2^k coalitions with every other group present."""
    members = np.asarray(game.groups[index])
    masks = group_masks(np.ones(len(game.players), dtype=bool), members)
    values = np.array([v.mean() for v in game.value_fn.many(masks)])
    return {game.players[m].bits: float(phi) for m, phi in zip(members, shapley_matrix(len(members)) @ values)}


def probe(root: Path, overrides: dict, layers: int) -> dict:
    """One copy, one variant: v(full), v(∅), the sampled groups' values and the φ(high) > φ(low) counts."""
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    params = load_params(params_path, {f"shapley.{k}": v for k, v in overrides.items()})
    start = time.perf_counter()
    game = build_game(params, paths)
    n = len(game.players)
    groups = {}
    for g in sampled_groups(game.players, game.groups, layers):
        player = game.players[game.groups[g][0]]
        groups[f"{player.layer}/{player.kind}"] = within_group(game, g)
    v_full, v_empty = (float(game.value_fn(np.full(n, keep)).mean()) for keep in (True, False))
    return summary(v_full, v_empty, groups, time.perf_counter() - start, overrides=overrides)


def largest_difference(groups: dict[str, dict[int, float]], reference: dict[str, dict[int, float]]) -> float:
    """Largest |φ − reference φ| over the candidates of the same sampled groups (the ``default`` control)."""
    return max(abs(phi - reference[key][bits]) for key, values in groups.items() for bits, phi in values.items())


def table(rows: dict) -> str:
    lines = ["| copy | variant | v(full) | v(∅) | groups φ(high) > φ(low): weights | activations | wall s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for copy, variants in rows.items():
        for name, r in variants.items():
            (w, nw), (a, na) = r["high_above_low"]["w"], r["high_above_low"]["a"]
            lines.append(f"| {copy} | {name} | {r['v_full']:.3f} | {r['v_empty']:.3f} | {w} of {nw} | {a} of {na} | "
                         f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.mixture_dependence", description=__doc__.splitlines()[0])
    parser.add_argument("copies", type=Path, nargs="+", help="trained project folders (after the shapley stage)")
    parser.add_argument("--layers", type=int, default=4, help="layers whose groups are valued (evenly spaced)")
    parser.add_argument("--variant", action="append", default=None,
                        help=f"NAME:KEY=VALUE,... of the shapley section (default: {', '.join(VARIANTS)})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every number")
    args = parser.parse_args(argv)
    if args.layers < 1:
        parser.error(f"--layers must be at least 1, got {args.layers}")
    variants = dict(map(parse_variant, args.variant)) if args.variant else VARIANTS
    missing = [str(c) for c in args.copies if not (c / "data" / "shapley" / "shapley.json").is_file()]
    if missing:
        raise SystemExit(f"error: no trained shapley stage in {', '.join(missing)}; run `dvc repro shapley` there")
    torch.set_num_threads(args.threads)
    rows: dict[str, dict] = {}
    for copy in args.copies:
        row = rows[copy.name] = {"recorded": recorded(copy, args.layers)}
        for name, overrides in variants.items():
            r = row[name] = probe(copy.resolve(), overrides, args.layers)
            control = ""
            if not overrides:
                r["max_difference_to_recorded"] = largest_difference(r["groups"], row["recorded"]["groups"])
                control = f", max |φ − recorded| {r['max_difference_to_recorded']:.2e}"
            print(f"{copy.name} {name}: v(full) {r['v_full']:.3f}, v(∅) {r['v_empty']:.3f}{control}", flush=True)
    print(table(rows))
    if args.out:
        write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
