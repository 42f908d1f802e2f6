"""Benchmark: does the game value of a policy rank policies like their accuracy after QAT? And does α commit?

Why (SPEC §3.3 "supernet alignment", §3.2): the selection trusts the game, so a policy's own coalition (one
candidate per group) should score like the network it deploys; and "SMPQ beats DMPQ" means nothing if α never
left uniform. On a trained project (``--project``: its ``prepare``, ``pretrain``, ``calibrate`` outputs, read
only), this

1. draws ``--policies`` random policies using 85–100 % of ``select.budget`` (seeded), and fine-tunes each with
   the ``finetune`` stage's own recipe from ``params.yaml`` (top-1 on ``test``);
2. trains one supernet per ``--variant`` (``name:key=value,...`` overrides of the ``supernet`` section) with
   the ``supernet`` stage, recording per epoch the α entropy and the argmax (DMPQ) policy;
3. evaluates each policy's coalition in the ``shapley`` stage's game (``shapley.value`` on the seeded
   ``search_val`` batches) on each supernet, and reports Kendall τ between game value and top-1 after QAT.

    python -m bench.alignment [--project .] [--policies 12] [--variant base: sp50:single_path=0.5 ...] --out DIR
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import kendalltau

from pipelines.dag import stage_command
from smpq.artifacts import read_json, write_json
from smpq.config import VALUES, load_params
from smpq.cost import Budget, CostTable, bitops
from smpq.policy import LayerBits, Policy, fixed_bits
from stages import finetune, supernet
from stages.shapley_worker import STAGE, ShapleyPaths, build_game, stage_inputs

log = logging.getLogger("bench.alignment")


MAX_DRAWS = 100_000  # rejection sampling: on a deep network a uniform draw almost never lands in the band


def random_policies(params, table: CostTable, count: int, seed: int) -> dict[str, Policy]:
    """``count`` policies with uniformly drawn bits per searchable layer, using 85–100 % of ``select.budget``
    (rejection sampling; a band that ``MAX_DRAWS`` draws do not fill is a one-line error, not a hang)."""
    fixed = fixed_bits(params.quant.first_last, table)
    budget = Budget.from_config(params.select.budget, table, fixed).bitops
    rng, policies = np.random.default_rng([seed, 11]), {}
    for _ in range(MAX_DRAWS):
        if len(policies) == count:
            break
        bits = {name: fixed.get(name) or LayerBits(int(rng.choice(params.quant.w_bits)),
                                                   int(rng.choice(params.quant.a_bits))) for name in table.names}
        policy = Policy(bits)
        if 0.85 * budget <= bitops(table, policy) <= budget:
            policies[f"random{len(policies):02d}"] = policy
    if len(policies) < count:
        raise SystemExit(f"error: {MAX_DRAWS} random policies gave {len(policies)} of {count} within 85–100 % of "
                         f"select.budget ({len(table.names)} layers): raise the budget or draw fewer")
    return policies


def coalition(players, policy: Policy) -> np.ndarray:
    """The mask of a policy: each group's chosen candidate alone."""
    return np.array([p.bits == (policy[p.layer].w_bits if p.kind == "w" else policy[p.layer].a_bits)
                     for p in players])


def fine_tune_policies(params, paths: ShapleyPaths, policies: dict[str, Policy], out: Path) -> dict[str, Path]:
    """Each policy through the ``finetune`` stage's QAT with ``params``; its results folder (runs already
    there from an earlier run of the bench are kept)."""
    folders = {}
    for name, policy in policies.items():
        folders[name] = results = out / "finetune" / name
        if not (results / "metrics.json").exists():
            policy.save(out / "policies" / f"{name}.yaml")
            finetune.run(params, name, prepared_dir=paths.prepared, pretrain_dir=paths.pretrain,
                         calibrate_dir=paths.calibrate, select_dir=out / "policies", out=out / "models" / name,
                         results=results)
    return folders


def qat_top1(params, paths: ShapleyPaths, policies: dict[str, Policy], out: Path) -> dict[str, float]:
    """Top-1 on ``test`` after the ``finetune`` stage's QAT of each policy."""
    top1 = {}
    for name, results in fine_tune_policies(params, paths, policies, out).items():
        top1[name] = read_json(results / "metrics.json")["top1"]
        print(f"  QAT {name}: {100 * top1[name]:.2f} %", flush=True)
    return top1


def train_variant(params, paths: ShapleyPaths, folder: Path) -> list[dict]:
    """The ``supernet`` stage into ``folder``; per epoch its α entropy and argmax policy."""
    record = folder / "epochs.json"
    if record.exists():  # trained by an earlier run of the bench
        return read_json(record)
    epochs = []

    def on_epoch(epoch: int, metrics: dict, alpha: dict) -> None:
        argmax = {f"{layer}:{kind}": group["bits"][int(np.argmax(group["probabilities"]))]
                  for layer, kinds in alpha.items() for kind, group in kinds.items()}
        epochs.append({"epoch": epoch, "alpha_entropy": metrics["alpha_entropy"], "argmax": argmax,
                       "val_top1": metrics.get("val_top1")})
    supernet.run(params, prepared_dir=paths.prepared, pretrain_dir=paths.pretrain, calibrate_dir=paths.calibrate,
                 out=folder, results=folder / "results", on_epoch=on_epoch)
    write_json(record, epochs)
    return epochs


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, value = item.split("=")
        overrides[f"supernet.{key}"] = float(value) if "." in value else int(value)
    return name, overrides


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.alignment", description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--policies", type=int, default=12)
    parser.add_argument("--variant", nargs="+", default=["base:", "single_path_0.5:single_path=0.5"])
    parser.add_argument("--game", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the shapley section for the game, e.g. bn_recalibration=8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    root = args.project.resolve()
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    game_overrides = {f"shapley.{k}": yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.game)}
    base = {"tracking.enabled": False, "seed": args.seed}
    params = load_params(params_path, base)
    policies = random_policies(params, CostTable.load(paths.calibrate), args.policies, args.seed)
    top1 = qat_top1(params, paths, policies, args.out)
    report = {"top1": top1, "game": game_overrides, "variants": {}}
    for name, overrides in map(parse_variant, args.variant):
        variant_params = load_params(params_path, base | overrides)
        folder = args.out / "supernets" / name
        epochs = train_variant(variant_params, paths, folder)
        trained = ShapleyPaths(paths.prepared, paths.pretrain, paths.calibrate, folder, paths.out, paths.results)
        values, tau = {}, {}
        for value in VALUES:
            game_params = load_params(params_path, base | overrides | game_overrides | {"shapley.value": value})
            game = build_game(game_params, trained)
            values[value] = {n: float(game.value_fn(coalition(game.players, p)).mean()) for n, p in policies.items()}
            tau[value] = float(kendalltau([values[value][n] for n in policies], [top1[n] for n in policies]).statistic)
        last = [e["argmax"] for e in epochs[-2:]]
        changed = sum(last[0][k] != last[-1][k] for k in last[0]) if len(last) == 2 else None
        report["variants"][name] = {"overrides": overrides, "tau": tau, "values": values, "epochs": epochs,
                                    "argmax_changes_last_epoch": changed}
        entropies = ", ".join(f"{e['alpha_entropy']:.3f}" for e in epochs)
        taus = ", ".join(f"{v} {t:.3f}" for v, t in tau.items())
        print(f"{name}: Kendall τ(game value, top-1 after QAT) over {len(policies)} policies: {taus}; "
              f"α entropy per epoch {entropies}; argmax groups changed in the last epoch: {changed}", flush=True)
    tag = "".join(f"-{k.split('.')[-1]}={v}" for k, v in game_overrides.items())
    write_json(args.out / f"alignment{tag}.json", report)
    return report


if __name__ == "__main__":
    main()
