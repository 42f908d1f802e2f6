"""Stage ``select``: one policy per method at the same BitOps (and optional size) budget (SPEC §3.4).

- ``smpq``: maximise the total Shapley value of the chosen candidates (exact integer program);
- ``dmpq``: the same program scored by log p(α) (iso-budget DMPQ);
- ``hawq``: the same program minimising HAWQ-V3's total Ω (Hessian sensitivity, stage ``sensitivity``);
- ``uniform``: the highest uniform bit pair that fits;
- ``dmpq_argmax``: the supernet's raw argmax policy, recorded with its own BitOps (may miss the budget).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from smpq.artifacts import read_json, write_json
from smpq.cost import Budget, CostTable
from smpq.errors import InfeasibleBudget
from smpq.policy import Policy, fixed_bits
from smpq.select import budget_error, policy_report, select_policy, uniform_policy
from smpq.sensitivity import SENSITIVITY_FILE
from stages.run_info import numeric, record_summary
from stages.session import parse_args, session

log = logging.getLogger("smpq.stage.select")


def shapley_scores(shapley: dict) -> dict[tuple[str, str, int], float]:
    return {(p["layer"], p["kind"], p["bits"]): p["value"] for p in shapley["players"]}


def alpha_scores(alpha: dict) -> dict[tuple[str, str, int], float]:
    """log p(α) per candidate: the iso-budget DMPQ objective (sum of log-probabilities)."""
    return {(layer, kind, bits): math.log(max(prob, 1e-12))
            for layer, kinds in alpha.items() for kind, group in kinds.items()
            for bits, prob in zip(group["bits"], group["probabilities"])}


def hawq_scores(sensitivity: dict) -> dict[tuple[str, str, int], float]:
    """−Ω per candidate: maximising Σ −Ω is HAWQ-V3's minimum total sensitivity (Yao et al. 2021, eq. 9)."""
    return {(c["layer"], c["kind"], c["bits"]): -c["omega"] for c in sensitivity["candidates"]}


def selection_problem(params, table: CostTable) -> dict:
    """The keyword arguments every method's selection shares: costs, budget, fixed layers, candidates."""
    fixed, quant = fixed_bits(params.quant.first_last, table), params.quant
    budget = Budget.from_config(params.select.budget, table, fixed)
    return dict(table=table, budget=budget, fixed=fixed, w_bits=quant.w_bits, a_bits=quant.a_bits)


def run(params, *, calibrate_dir: Path, supernet_dir: Path, shapley_dir: Path, sensitivity_dir: Path, out: Path,
        results: Path) -> dict:
    table = CostTable.load(calibrate_dir)
    choose = selection_problem(params, table)
    budget, fixed = choose["budget"], choose["fixed"]
    try:
        policies = {
            "smpq": select_policy(shapley_scores(read_json(shapley_dir / "shapley.json")), **choose),
            "dmpq": select_policy(alpha_scores(read_json(supernet_dir / "alpha.json")), **choose),
            "hawq": select_policy(hawq_scores(read_json(sensitivity_dir / SENSITIVITY_FILE)), **choose),
            "uniform": uniform_policy(**choose),
            "dmpq_argmax": Policy.load(supernet_dir / "dmpq_argmax.yaml"),
        }
    except InfeasibleBudget as err:  # in the unit and under the key the user wrote
        raise budget_error(err, params.select.budget, table, fixed) from None
    summary = {}
    for method, policy in policies.items():
        policy.save(out / f"{method}.yaml")
        summary[method] = {**policy_report(table, policy, budget),
                           "policy": policy.label(exclude=(table.first, table.last))}
        log.info("select %s: policy %s, %.6g of %.6g GBitOps", method, summary[method]["policy"],
                 summary[method]["gbitops"], summary[method]["budget_gbitops"])
    write_json(results / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args("select", ["calibrate", "supernet", "shapley", "sensitivity", "out", "results"], argv)
    with session("select", args, sections=("quant", "select")) as s:
        summary = run(s.params, calibrate_dir=args.calibrate, supernet_dir=args.supernet, shapley_dir=args.shapley,
                      sensitivity_dir=args.sensitivity, out=args.out, results=args.results)
        s.tracker.log_metrics(numeric(summary))  # smpq.gbitops, …: the names DVC shows (stages/run_info.py)
        s.tracker.log_artifact(args.out)
        s.tracker.log_artifact(args.results)
        record_summary(s.tracker, {}, (args.out, "policies"))  # every method's policy on the pipeline run


if __name__ == "__main__":
    main()
