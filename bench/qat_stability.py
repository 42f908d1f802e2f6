"""Benchmark: how far apart do QAT runs of one policy land over fine-tune seeds, and why?

Why (issue 11, docs/RESULTS.md §0j): on ``mobilenet_v2`` the ``finetune`` stage's QAT gave the same policy
42 % with one fine-tune seed and 58 % with the next (pooled spread 6.6 pp). On a trained project (``--project``:
its ``prepare``, ``pretrain``, ``calibrate`` outputs, read only) this fine-tunes each policy with each fine-tune
seed and each ``--recipe`` (``name:key=value,...`` overrides of the ``finetune`` section), then scores every
model on ``test`` with its running statistics and after re-estimating them on ``--bn-batches`` seeded train
batches (AdaBN; the oscillation hypothesis of Nagel et al., ICML 2022, §3.2). It reports per (recipe, BN
batches) the mean top-1 and the spread (the pooled standard deviation over fine-tune seeds, as
``bench.methods`` reports it), and per run the LSQ step entries below zero: each was a silenced channel
before ``smpq.quant.lsq.positive_step``, the cause it found (re-estimating BN did not help).

    python -m bench.qat_stability --project DIR [--uniform 3:2 3:3] [--random 2] [--policy smpq=FILE ...] \
        [--finetune-seeds 0 1 2] [--recipe base: lr0.003:lr=0.003] [--bn-batches 8 32] --out DIR

``--policy NAME=FILE`` adds a saved policy, e.g. a ``select`` output: with the project's own seed and the
``finetune`` section unchanged, fine-tune seed k repeats that project's ``finetune`` stage run with seed k.

Fine-tuned runs (and their scores) already in ``--out`` are kept, so runs split over processes (disjoint
policies or ``--finetune-seeds``) merge by running the bench once more with all of them.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import statistics
from pathlib import Path

import torch
import yaml

from bench.alignment import fine_tune_policies, random_policies
from pipelines.dag import stage_command
from smpq.artifacts import load_state_dict, read_json, write_json
from smpq.config import load_params
from smpq.cost import CostTable
from smpq.errors import ArtifactError
from smpq.policy import LayerBits, Policy, fixed_bits
from smpq.quant import CALIBRATION_FILE, Calibration, apply_policy
from smpq.supernet.batchnorm import recalibrated
from smpq.train import evaluate
from stages.finetune import MODEL_FILE
from stages.inputs import build_model, load_prepared
from stages.shapley_worker import STAGE, stage_inputs

SCORES_FILE = "bn_scores.json"  # beside each run's metrics.json: test top-1 per BN-batch count


def uniform(params, table: CostTable, spec: str) -> Policy:
    """``W:A`` bits on every searchable layer, the first and last layers at ``quant.first_last``."""
    w, _, a = spec.partition(":")
    if not (w.isdigit() and a.isdigit()):
        raise SystemExit(f"error: --uniform {spec!r}: expected W:A bit-widths (e.g. 3:2)")
    fixed = fixed_bits(params.quant.first_last, table)
    return Policy({name: fixed.get(name) or LayerBits(int(w), int(a)) for name in table.names})


def saved_policy(text: str) -> tuple[str, Policy]:
    """``NAME=FILE`` → (name, the policy in FILE, e.g. a ``select`` output)."""
    name, sep, file = text.partition("=")
    if not (name and sep and file):
        raise SystemExit(f"error: --policy {text!r}: expected NAME=FILE (e.g. smpq=data/select/smpq.yaml)")
    try:
        return name, Policy.load(file)
    except ArtifactError as err:
        raise SystemExit(f"error: --policy {text!r}: {err}") from None


def parse_recipe(text: str) -> tuple[str, dict]:
    """``name:key=value,...`` → (name, dotted overrides of the ``finetune`` section)."""
    name, _, rest = text.partition(":")
    items = [item.partition("=") for item in filter(None, rest.split(","))]
    if not name or any(not sep for _, sep, _ in items):
        raise SystemExit(f"error: --recipe {text!r}: expected NAME:KEY=VALUE,... (e.g. lr0.003:lr=0.003)")
    return name, {f"finetune.{key}": yaml.safe_load(value) for key, _, value in items}


def scores(params, paths, policy: Policy, model_file: Path, bn_batches: list[int]) -> dict[int, float]:
    """Test top-1 of one fine-tuned model with its running BN statistics (0) and re-estimated on k train batches."""
    prepared = load_prepared(paths.prepared)
    calibration = Calibration.load(paths.calibrate / CALIBRATION_FILE)
    model = apply_policy(build_model(params, prepared, paths.pretrain / MODEL_FILE), policy, calibration)
    model.load_state_dict(load_state_dict(model_file))
    model.eval()
    test = prepared.loader("test", batch_size=params.finetune.eval_batch_size, seed=params.seed)
    train = prepared.loader("train", batch_size=params.finetune.batch_size, seed=params.seed, shuffle=True)
    batches = [images for images, _labels in itertools.islice(train, max(bn_batches))]
    result = {}
    for k in bn_batches:
        with recalibrated(model, batches[:k]):
            result[k] = evaluate(model, test)["top1"]
    return result


def cached_scores(path: Path, bn_batches: list[int], score) -> dict[int, float]:
    """``score(missing)`` for the BN-batch counts not yet in ``path`` (beside the run), kept there for a later run."""
    known = {int(k): v for k, v in read_json(path).items()} if path.exists() else {}
    missing = [k for k in bn_batches if k not in known]
    if missing:
        known |= score(missing)
        write_json(path, {str(k): v for k, v in sorted(known.items())})
    return {k: known[k] for k in bn_batches}


def steps_below_zero(state: dict) -> int:
    """LSQ step entries an update carried below zero (quantizing with |step| since ``positive_step``; before it,
    each was a silenced channel)."""
    return sum(int((value < 0).sum()) for key, value in state.items() if key.endswith(".step"))


def spread(top1: dict[str, dict[int, float]], seeds: list[int]) -> float | None:
    """Pooled standard deviation over fine-tune seeds of the runs {policy: {seed: top-1}}."""
    if len(seeds) < 2:
        return None
    return statistics.fmean(statistics.variance(runs[s] for s in seeds) for runs in top1.values()) ** 0.5


def run_recipe(params_of, paths, policies: dict[str, Policy], seeds: list[int], bn_batches: list[int],
               folder: Path) -> dict:
    """Fine-tune every policy with every seed (``params_of(seed)``; runs already in ``folder`` are kept), then
    score each model; per BN-batch count the top-1 of each run, their mean and the spread over seeds."""
    top1, control = {k: {name: {} for name in policies} for k in bn_batches}, 0.0
    crossed = {name: {} for name in policies}
    for seed in seeds:
        params = params_of(seed)
        for name, results in fine_tune_policies(params, paths, policies, folder / f"ft{seed}").items():
            model_file = folder / f"ft{seed}" / "models" / name / MODEL_FILE
            values = cached_scores(results / SCORES_FILE, bn_batches,
                                   functools.partial(scores, params, paths, policies[name], model_file))
            for k, value in values.items():
                top1[k][name][seed] = value
            crossed[name][seed] = steps_below_zero(load_state_dict(model_file))
            # control: with its own statistics (k = 0) the saved model scores what the stage recorded
            control = max(control, abs(values[0] - read_json(results / "metrics.json")["top1"]))
            line = ", ".join(f"{100 * top1[k][name][seed]:.2f} (BN {k})" for k in bn_batches)
            print(f"  {folder.name} ft{seed} {name}: test top-1 % {line}; steps below zero "
                  f"{crossed[name][seed]}", flush=True)
    rows = {str(k): {"top1": top1[k], "spread": spread(top1[k], seeds),
                     "mean": statistics.fmean(v for runs in top1[k].values() for v in runs.values())}
            for k in bn_batches}
    return {"control_max_difference": control, "rows": rows, "steps_below_zero": crossed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.qat_stability", description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--uniform", nargs="*", default=["3:2", "3:3"], metavar="W:A")
    parser.add_argument("--random", type=int, default=2, help="random policies using 85–100 %% of select.budget")
    parser.add_argument("--policy", nargs="*", default=[], metavar="NAME=FILE", help="saved policies")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", nargs="+", default=["base:"], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--bn-batches", type=int, nargs="+", default=[8, 32], help="besides 0 (as trained)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    recipes, bn_batches = dict(map(parse_recipe, args.recipe)), sorted({0, *args.bn_batches})
    saved = dict(map(saved_policy, args.policy))
    if len(saved) < len(args.policy):
        raise SystemExit("error: --policy: each NAME may appear once")
    if min(args.bn_batches) < 0 or len(args.uniform) + args.random + len(saved) < 1:
        raise SystemExit("error: --bn-batches must be ≥ 0 and at least one policy is needed (--uniform, --random, "
                         "--policy)")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    root = args.project.resolve()
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    base = {"tracking.enabled": False, "seed": args.seed}
    params = load_params(params_path, base)
    table = CostTable.load(paths.calibrate)
    policies = {f"W{spec.replace(':', 'A')}": uniform(params, table, spec) for spec in args.uniform}
    for name, policy in saved.items():
        if set(policy) != set(table.names):
            raise SystemExit(f"error: --policy {name}: its layers are not the project's ({root})")
    policies |= random_policies(params, table, args.random, args.seed)
    if set(saved) & set(policies):
        raise SystemExit(f"error: --policy {sorted(set(saved) & set(policies))}: the name of a --uniform or "
                         "--random policy; choose another NAME")
    policies |= saved
    report = {"project": str(root), "finetune_seeds": args.finetune_seeds, "recipes": {}}
    for name, overrides in recipes.items():
        rows = run_recipe(lambda s, o=overrides: load_params(params_path, base | o | {"finetune.seed": s}), paths,
                          policies, args.finetune_seeds, bn_batches, args.out / name)
        report["recipes"][name] = {"overrides": overrides} | rows
        for k, row in rows["rows"].items():
            spread_pp = "–" if row["spread"] is None else f"{100 * row['spread']:.2f}"
            print(f"{name}, BN re-estimated on {k} batches: mean top-1 {100 * row['mean']:.2f} %, "
                  f"spread over fine-tune seeds {spread_pp} pp", flush=True)
    write_json(args.out / "qat_stability.json", report)
    return report


if __name__ == "__main__":
    main()
