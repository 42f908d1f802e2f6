"""Benchmark report: which LSQ steps QAT carried below zero, by bit-width and layer shape, and where they landed.

Why (issue 11, docs/RESULTS.md §0k): since ``smpq.quant.lsq.positive_step`` a step that an SGD update carries past
zero keeps quantizing with |step|, but it passed |step| ≈ 0 on the way, and LSQ's update (Esser et al. 2020,
eq. 3 with g = 1/sqrt(N·Q_max)) does not shrink with the step, so the smallest steps cross most. On
``mobilenet_v2`` the runs whose policies give 8-bit weights to depthwise convs had the most crossings. For each
fine-tuned model (a ``finetune`` stage output: ``model.pt`` and ``policy.yaml``) this counts the step entries
below zero per group (weights or activations, bits, depthwise, end or other layer) and, for weights, the median
grid ratio r = |step|·Q_max / max|w| of the channel (1: the grid just spans the channel; r > 1 leaves levels
unused, about log2(r) bits of the b-bit grid), separately for crossed and uncrossed channels.

    python -m bench.step_crossings --runs smpq_s0=P/data/finetune/smpq dmpq_s0=… [--out FILE.json]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from smpq.artifacts import load_state_dict, write_json
from smpq.errors import ArtifactError
from smpq.policy import Policy
from smpq.quant.lsq import quant_range
from stages.finetune import MODEL_FILE, POLICY_FILE

KINDS = {"w_quant": "w", "a_quant": "a"}


def group_name(kind: str, bits: int, shape: str) -> str:
    """``"w8 dw"``: weights (w) or input activations (a), their bits, and the layer's shape: ``dw`` (a depthwise
    conv), ``first`` or ``last`` (the policy's end layers, at ``quant.first_last``) or nothing (any other)."""
    return f"{kind}{bits}" + (f" {shape}" if shape else "")


def layer_shape(name: str, weight: torch.Tensor, policy: Policy) -> str:
    """``first``/``last`` for the policy's end layers, ``dw`` for a conv with one input channel per group."""
    names = list(policy)
    if name in (names[0], names[-1]):
        return "first" if name == names[0] else "last"
    return "dw" if weight.dim() == 4 and weight.shape[1] == 1 else ""


def crossings(state: dict[str, torch.Tensor], policy: Policy) -> dict[str, dict]:
    """Per group: ``crossed``/``steps`` entries below zero/all, and for weights the median grid ratio of the
    crossed and the uncrossed channels (``ratio_crossed``, ``ratio_kept``; None where there is none)."""
    groups: dict[str, dict] = {}
    for key, step in state.items():
        layer, _, tail = key.rpartition(".")
        layer, _, quantizer = layer.rpartition(".")
        if tail != "step" or quantizer not in KINDS or layer not in policy:
            continue
        kind = KINDS[quantizer]
        bits = policy[layer].w_bits if kind == "w" else policy[layer].a_bits
        weight = state[f"{layer}.weight"]
        name = group_name(kind, bits, layer_shape(layer, weight, policy))
        group = groups.setdefault(name, {"crossed": 0, "steps": 0, "ratios": ([], [])})
        crossed = step < 0
        group["crossed"] += int(crossed.sum())
        group["steps"] += step.numel()
        if kind == "w":
            ratio = step.abs() * quant_range(bits, signed=True)[1] / weight.flatten(1).abs().amax(1).clamp_min(1e-12)
            group["ratios"][0].extend(ratio[crossed].tolist())
            group["ratios"][1].extend(ratio[~crossed].tolist())
    for group in groups.values():
        crossed, kept = group.pop("ratios")
        group["ratio_crossed"] = statistics.median(crossed) if crossed else None
        group["ratio_kept"] = statistics.median(kept) if kept else None
    return dict(sorted(groups.items()))


def load_run(folder: Path) -> tuple[dict, Policy]:
    """A ``finetune`` stage output's weights and policy."""
    missing = [name for name in (MODEL_FILE, POLICY_FILE) if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"error: {folder}: not a finetune output (missing {', '.join(missing)})")
    try:
        return load_state_dict(folder / MODEL_FILE), Policy.load(folder / POLICY_FILE)
    except (ArtifactError, ValueError) as error:
        raise SystemExit(f"error: {folder}: {error}") from None


def parse_run(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not (name and sep and folder):
        raise SystemExit(f"error: --runs {text!r}: expected NAME=FOLDER (e.g. smpq_s0=P/data/finetune/smpq)")
    return name, Path(folder)


def fmt(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.2f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--out", type=Path, default=None, help="a JSON of every count")
    args = parser.parse_args(argv)
    runs = dict(map(parse_run, args.runs))
    if len(runs) != len(args.runs):
        raise SystemExit("error: --runs: a NAME is repeated")
    report = {name: crossings(*load_run(folder)) for name, folder in runs.items()}
    print("| run | group | steps below zero | grid ratio, crossed | grid ratio, kept |\n|---|---|---:|---:|---:|")
    for name, groups in report.items():
        for group, row in groups.items():
            if row["crossed"] or group.startswith("w8"):
                print(f"| {name} | {group} | {row['crossed']}/{row['steps']} | {fmt(row['ratio_crossed'])} | "
                      f"{fmt(row['ratio_kept'])} |")
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
