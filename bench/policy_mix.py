"""Diagnostic: how each method spends its budget. Per seed copy of a ``bench.methods`` run and per method, the
number of searchable layers at each weight and activation bit-width, and the share of MACs with 2-bit
activations.

Why: after QAT, 2-bit activations cost accuracy and 2-bit weights barely do (docs/RESULTS.md §0f), so where a
policy puts its low bits explains much of its fine-tuned top-1. Reads ``data/select/<method>.yaml`` (the
selection of the copy's last budget) and ``data/calibrate`` (the cost table: layer order, MACs)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from bench.methods_report import ARGMAX, METHODS
from smpq.artifacts import write_json
from smpq.cost import CostTable
from smpq.policy import Policy


def policy_mix(policy: Policy, table: CostTable) -> dict:
    """Counts of searchable layers per weight and activation bit-width, and the MAC share at 2-bit activations."""
    layers = table.searchable
    a2_macs = sum(table[n].macs for n in layers if policy[n].a_bits == 2)
    return {"layers": len(layers), "w_bits": dict(sorted(Counter(policy[n].w_bits for n in layers).items())),
            "a_bits": dict(sorted(Counter(policy[n].a_bits for n in layers).items())),
            "a2_mac_share": a2_macs / sum(table[n].macs for n in layers)}


def copy_mix(copy: Path) -> dict[str, dict]:
    """``policy_mix`` of every method selected in one seed copy (``OUT/seed<n>``)."""
    select = copy / "data" / "select"
    if not select.is_dir():
        raise FileNotFoundError(f"{select}: no selection yet; run bench.methods into {copy.parent} first")
    table = CostTable.load(copy / "data" / "calibrate")
    return {m: policy_mix(Policy.load(select / f"{m}.yaml"), table) for m in (*METHODS, ARGMAX)
            if (select / f"{m}.yaml").is_file()}


def markdown(mixes: dict[str, dict[str, dict]]) -> str:
    lines = ["| copy | method | layers at W2 | layers at A2 | MACs at A2 | weight bits 2/3/4/8 "
             "| activation bits 2/3/4/8 |",
             "|---|---|---:|---:|---:|---|---|"]
    for copy, per_method in mixes.items():
        for m, x in per_method.items():
            w, a = ("/".join(str(c.get(b, 0)) for b in (2, 3, 4, 8)) for c in (x["w_bits"], x["a_bits"]))
            lines.append(f"| {copy} | {m} | {x['w_bits'].get(2, 0)} of {x['layers']} | {x['a_bits'].get(2, 0)} | "
                         f"{100 * x['a2_mac_share']:.0f} % | {w} | {a} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="bench.methods OUT folders (their seed<n> copies)")
    parser.add_argument("--out", type=Path, default=None, help="also write the counts as JSON here")
    args = parser.parse_args(argv)
    copies = sorted((c for run in args.runs for c in run.glob("seed*") if c.is_dir()), key=lambda c: c.name)
    if not copies:
        raise SystemExit(f"error: no seed<n> copies under {', '.join(map(str, args.runs))}")
    mixes = {c.name: copy_mix(c) for c in copies}
    print(markdown(mixes))
    if args.out:
        write_json(args.out, mixes)
    return mixes


if __name__ == "__main__":
    main()
