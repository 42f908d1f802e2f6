"""Benchmark: evaluations per second of the frozen, masked supernet vs the argmax fixed-policy model (SPEC §3.3).

The Shapley stage evaluates thousands of coalitions of one frozen supernet on a fixed 1 024-sample batch, so
one masked evaluation should cost about one forward of the quantized model it stands for. On the default
``compact_resnet`` (random weights, or ``--weights`` state_dict; calibration on random data; candidates
{2, 3, 4, 8} for weights and activations; first/last W8A8; α random, seeded), on 2 threads, each repeat times

- ``fixed``: plain eval forward of the argmax-policy model built by ``apply_policy``,
- ``masked``: ``set_coalition`` + forward for random coalitions (each player kept with probability 0.5,
  redrawn until no group is empty),
- ``full``: forward with the full mask (every candidate mixed),
- ``argmax``: the coalition of each group's argmax candidate, which *is* the fixed-policy model computed by the
  frozen path (its output is checked to equal ``fixed``'s),

- ``owen``: the evaluations of one Owen unit (every group's 2^k coalitions in its context, SPEC §3.3) with
  prefix reuse, as the ``shapley`` stage runs them (``neg_kl`` value, empty group = 8-bit reference), per
  new evaluation; ``owen_plain``: the same coalitions evaluated one by one (no prefix reuse); ``within``:
  the same for the default ``within_group`` unit (every other group present, at its full mixture);
  ``within_batched``: the same unit with ``--coalitions-per-forward`` K coalitions side by side in one forward
  (``shapley.coalitions_per_forward``), reported as its ratio to ``within`` (an accelerator's gain; a CPU gains
  little or nothing from larger kernels),

and the medians over repeats are printed with the ratios to ``fixed`` (targets: ≥ 0.8 for masked and full,
≥ 1.5 for owen and within: prefix reuse must make a game evaluation cheaper than a plain forward of the
quantized model).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn

from smpq.cost import cost_table
from smpq.models.registry import create_model
from smpq.policy import LayerBits
from smpq.quant import apply_policy, calibrate
from smpq.shapley.game import supernet_game
from smpq.shapley.owen import GroupSampler
from smpq.supernet import Supernet, player_groups

BITS = (2, 3, 4, 8)
INPUT_SHAPE = (1, 28, 28)
TARGET_RATIO = 0.8
PREFIX_TARGET = 1.5


def random_coalitions(supernet: Supernet, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Masks keeping each player with probability 0.5, every (layer, kind) group non-empty."""
    groups = {}
    for index, player in enumerate(supernet.players()):
        groups.setdefault((player.layer, player.kind), []).append(index)
    masks = []
    for _ in range(count):
        mask = np.zeros(len(supernet.players()), dtype=bool)
        for members in groups.values():
            keep = np.zeros(len(members), dtype=bool)
            while not keep.any():
                keep = rng.random(len(members)) < 0.5
            mask[members] = keep
        masks.append(mask)
    return masks


def argmax_coalition(supernet: Supernet) -> np.ndarray:
    """One player per group: the candidate of the argmax policy (probability 1 after renormalisation)."""
    policy = supernet.argmax_policy()
    return np.array([p.bits == (policy[p.layer].w_bits if p.kind == "w" else policy[p.layer].a_bits)
                     for p in supernet.players()])


def build(seed: int, batch: int, weights: str | None) -> tuple[Supernet, nn.Module, torch.Tensor, nn.Module]:
    """A frozen supernet (random α), its argmax fixed-policy model, random images and the float model."""
    torch.manual_seed(seed)
    model = create_model("compact_resnet", 10, 1, pretrained=weights)
    table = cost_table(model, INPUT_SHAPE)
    fixed = {table.first: LayerBits(8, 8), table.last: LayerBits(8, 8)}
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, *INPUT_SHAPE, generator=generator)
    halves = list(images.split(max(1, len(images) // 2))[:2])
    calibration = calibrate(model, table.searchable, halves, BITS, BITS, extra=fixed, seed=seed)
    supernet = Supernet(copy.deepcopy(model), table, BITS, BITS, calibration, fixed)
    with torch.no_grad():
        for alpha in supernet.alpha_parameters():
            alpha.copy_(torch.randn(alpha.shape, generator=generator))
    fixed_model = apply_policy(copy.deepcopy(model), supernet.argmax_policy(), calibration).eval()
    return supernet.freeze(), fixed_model, images, model.eval()


def owen_rate(supernet: Supernet, images: torch.Tensor, float_model: torch.nn.Module, seed: int,
              reuse: bool, estimator: str = "owen", per_forward: int = 1) -> float:
    """New evaluations per second of one Owen unit (a fresh memo), with or without prefix reuse."""
    with torch.no_grad():
        game = supernet_game(supernet, images, float_model(images).argmax(1), "neg_kl", fp_logits=float_model(images),
                             coalitions_per_forward=per_forward)
    value_fn = game if reuse else (lambda mask: game(mask))
    sampler = GroupSampler(value_fn, len(supernet.players()), player_groups(supernet.players()), seed=seed,
                           antithetic=False, estimator=estimator)
    before = sampler.n_evaluations
    start = time.perf_counter()
    sampler.unit(0)
    return (sampler.n_evaluations - before) / (time.perf_counter() - start)


def rate(run, evaluations: int) -> float:
    start = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # kernels launched by ``run`` have finished
    return evaluations / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--evals", type=int, default=5, help="forwards per timed repeat and variant")
    parser.add_argument("--batch", type=int, default=256, help="the game batch (shapley.batch_size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default=None, help="optional compact_resnet state_dict file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coalitions-per-forward", type=int, default=16, help="K of the within_batched variant")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda when the machine has a GPU")
    parser.add_argument("--no-owen", dest="owen", action="store_false", help="skip the Owen-unit variants")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    supernet, fixed_model, images, float_model = (t.to(args.device) for t in build(args.seed, args.batch,
                                                                                      args.weights))
    masks = random_coalitions(supernet, args.evals * (args.repeats + 1), np.random.default_rng(args.seed))
    full = np.ones(len(supernet.players()), dtype=bool)
    single = argmax_coalition(supernet)

    def fixed_run() -> None:
        for _ in range(args.evals):
            fixed_model(images)

    def masked_run(chunk: list[np.ndarray]) -> None:
        for mask in chunk:
            supernet.set_coalition(mask)
            supernet(images)

    rates: dict[str, list[float]] = {"fixed": [], "masked": [], "full": [], "argmax": [], "owen": [],
                                     "owen_plain": [], "within": [], "within_batched": []}
    with torch.no_grad():
        fixed_run(), masked_run(masks[:args.evals]), masked_run([full])  # warm-up
        with supernet.coalition(single):
            gap = float((supernet(images) - fixed_model(images)).abs().max())
        for r in range(args.repeats):  # interleaved, so load changes hit every variant alike
            chunk = masks[(r + 1) * args.evals:(r + 2) * args.evals]
            rates["fixed"].append(rate(fixed_run, args.evals))
            rates["masked"].append(rate(lambda chunk=chunk: masked_run(chunk), args.evals))
            rates["full"].append(rate(lambda: masked_run([full] * args.evals), args.evals))
            rates["argmax"].append(rate(lambda: masked_run([single] * args.evals), args.evals))
            if args.owen:
                supernet.set_empty_group("reference", max(BITS))
                rates["owen"].append(owen_rate(supernet, images, float_model, r, reuse=True))
                rates["owen_plain"].append(owen_rate(supernet, images, float_model, r, reuse=False))
                rates["within"].append(owen_rate(supernet, images, float_model, r, True, "within_group"))
                rates["within_batched"].append(owen_rate(supernet, images, float_model, r, True, "within_group",
                                                         args.coalitions_per_forward))
                supernet.set_empty_group("zero")
    rates = {name: values for name, values in rates.items() if values}
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"compact_resnet, batch {args.batch}, {args.threads} threads, {len(supernet.players())} players, "
          f"median of {args.repeats} repeats x {args.evals} evaluations")
    for name, value in medians.items():
        print(f"  {name:>6}: {value:7.2f} evaluations/s  ({1e3 / value:7.1f} ms each)")
    print(f"  argmax coalition vs fixed model: max abs output difference {gap:.3g}")
    if "within_batched" in medians:
        print(f"  within_batched/within = {medians['within_batched'] / medians['within']:.2f} "
              f"({args.coalitions_per_forward} coalitions per forward, {args.device})")
    for name in medians.keys() - {"fixed", "within_batched"}:
        ratio, target = medians[name] / medians["fixed"], PREFIX_TARGET if name in ("owen", "within") else TARGET_RATIO
        print(f"  {name}/fixed = {ratio:.2f} ({'meets' if ratio >= target else 'misses'} the {target} target)")
    return {"evaluations_per_second": medians, "argmax_vs_fixed_max_abs_diff": gap}


if __name__ == "__main__":
    main()
