"""Stage ``select``: one policy per method at the same BitOps (and optional size) budget (SPEC §3.4)."""

from __future__ import annotations

from pathlib import Path

from smpq.artifacts import read_json, write_json
from smpq.cost import CostTable, budget_bitops
from smpq.select import policy_report, uniform_policy
from stages.inputs import fixed_bits
from stages.session import parse_args, session


def budget(params, table: CostTable) -> tuple[float, float | None]:
    """(BitOps budget, size budget in bytes or None) from ``select.budget``."""
    b = params.select.budget
    bitops_budget = budget_bitops(table, fixed_bits(params, table), avg_bits=b.avg_bits, gbitops=b.gbitops)
    return bitops_budget, (b.size_mb * 1e6 if b.size_mb is not None else None)


def run(params, *, calibrate_dir: Path, out: Path, results: Path) -> dict:
    table = CostTable.from_dict(read_json(calibrate_dir / "cost_table.json"))
    bitops_budget, size_budget = budget(params, table)
    fixed = fixed_bits(params, table)
    policies = {
        "uniform": uniform_policy(table, fixed, w_bits=params.quant.w_bits, a_bits=params.quant.a_bits,
                                  budget_bitops=bitops_budget, size_budget_bytes=size_budget),
    }
    summary = {}
    for method, policy in policies.items():
        policy.save(out / f"{method}.yaml")
        summary[method] = policy_report(table, policy, bitops_budget, size_budget)
    write_json(results / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args("select", ["calibrate", "out", "results"], argv)
    with session("select", args, sections=("quant", "select")) as s:
        summary = run(s.params, calibrate_dir=args.calibrate, out=args.out, results=args.results)
        for method, report in summary.items():
            s.tracker.log_metrics({f"{method}_{k}": v for k, v in report.items() if isinstance(v, (int, float))})
        s.tracker.log_artifact(args.out)
        s.tracker.log_artifact(args.results)


if __name__ == "__main__":
    main()
