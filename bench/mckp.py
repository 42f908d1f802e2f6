"""Benchmark: exact MCKP selection on a ResNet-18-sized instance (SPEC §3.4).

19 searchable layers (torchvision ResNet-18 at 224×224 without the stem conv and the fc) × 16 bit pairs
(W, A ∈ {2, 3, 4, 8}), random Shapley-like scores, a budget equal to the BitOps of uniform W3A3.
Prints the median solve time over the repeats and whether it is under 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import product

import numpy as np

from smpq.select import solve_mckp

BITS = (2, 3, 4, 8)
TARGET_MS = 50.0


def resnet18_searchable_macs() -> list[int]:
    """MACs of ResNet-18's 3×3 convs and 1×1 downsamples in execution order (19 layers)."""
    macs = [64 * 64 * 9 * 56 * 56] * 4
    for c_in, c_out, side in ((64, 128, 28), (128, 256, 14), (256, 512, 7)):
        first, block, shortcut = c_out * c_in * 9 * side**2, c_out * c_out * 9 * side**2, c_out * c_in * side**2
        macs += [first, block, shortcut, block, block]
    return macs


def instance(seed: int) -> tuple[list[list[float]], list[list[float]], float]:
    """Random scores, BitOps costs and the uniform-W3A3 budget."""
    rng = np.random.default_rng(seed)
    pairs = list(product(BITS, BITS))
    macs = resnet18_searchable_macs()
    values = [(rng.normal(size=len(pairs)) * 0.01).tolist() for _ in macs]
    costs = [[float(m * w * a) for w, a in pairs] for m in macs]
    return values, costs, float(sum(macs) * 9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    values, costs, budget = instance(args.seed)
    solve_mckp(values, costs, budget)  # warm-up (imports, HiGHS load)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        choice = solve_mckp(values, costs, budget)
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    used = sum(c[k] for c, k in zip(costs, choice))
    print(f"MCKP {len(values)} groups x {len(values[0])} items, budget {budget / 1e9:.3f} GBitOps, "
          f"used {used / 1e9:.3f}: median {median:.1f} ms over {args.repeats} repeats "
          f"(min {min(times):.1f}, max {max(times):.1f}); under {TARGET_MS:.0f} ms: {median < TARGET_MS}")


if __name__ == "__main__":
    main()
