"""Copy the committed run's results table into README.md, so the README shows exactly the run it describes.

The block between ``<!-- results:begin -->`` and ``<!-- results:end -->`` is replaced by the budget line (which
names the machine) and the method table of ``results/report/report.md``, the file the ``report`` stage wrote in
the last ``dvc repro`` (``dvc.lock`` records its hash). Run it after committing a new ``dvc repro``:

    python -m bench.readme_results            # rewrites README.md in place
    python -m bench.readme_results --check    # exit 1 if README.md's block differs from the report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smpq.artifacts import write_text

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_block(report: str) -> str:
    """The budget/machine paragraph and the first table of a ``report.md``."""
    paragraphs = report.split("\n\n")
    budget = next((p for p in paragraphs if p.startswith("Budget:")), None)
    table = next((p for p in paragraphs if p.startswith("| method")), None)
    if budget is None or table is None:
        raise ValueError("the report has no 'Budget:' paragraph or no '| method' table; is it a report.md?")
    return f"{BEGIN}\n{budget.strip()}\n\n{table.strip()}\n{END}"


def with_results(readme: str, report: str) -> str:
    """``readme`` with its results block replaced by the one ``report`` gives."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"README.md has no {BEGIN} … {END} block to fill")
    return head + results_block(report) + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--report", type=Path, default=Path("results/report/report.md"))
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the block is stale")
    args = parser.parse_args(argv)
    readme = args.readme.read_text()
    updated = with_results(readme, args.report.read_text())
    if args.check:
        if updated != readme:
            print(f"{args.readme}: the results block differs from {args.report}; run python -m bench.readme_results")
            return 1
        return 0
    write_text(args.readme, updated)
    print(f"{args.readme}: results block copied from {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
