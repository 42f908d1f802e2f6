"""The README's results block is the committed report's table, and the copier refuses what it cannot place."""

from pathlib import Path

import pytest

from bench.readme_results import BEGIN, END, main, with_results

ROOT = Path(__file__).resolve().parents[2]
REPORT = "# T\n\nBudget: 0.0176 GBitOps. Machine: X.\n\n| method | top-1 |\n|---|---:|\n| smpq | 89.1 |\n\nmore\n"


def test_the_block_is_replaced_and_the_rest_kept():
    readme = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert with_results(readme, REPORT) == (f"intro\n{BEGIN}\nBudget: 0.0176 GBitOps. Machine: X.\n\n"
                                            f"| method | top-1 |\n|---|---:|\n| smpq | 89.1 |\n{END}\noutro\n")


def test_missing_markers_or_table_are_one_line_errors():
    with pytest.raises(ValueError, match="README.md has no <!-- results:begin -->"):
        with_results("no block", REPORT)
    with pytest.raises(ValueError, match="no 'Budget:' paragraph or no '| method' table"):
        with_results(f"{BEGIN}{END}", "# empty report\n")


def test_check_mode_reports_a_stale_block_and_leaves_the_file(tmp_path, capsys):
    readme, report = tmp_path / "README.md", tmp_path / "report.md"
    readme.write_text(f"{BEGIN}\nold\n{END}\n")
    report.write_text(REPORT)
    assert main(["--readme", str(readme), "--report", str(report), "--check"]) == 1
    assert readme.read_text() == f"{BEGIN}\nold\n{END}\n" and "differs" in capsys.readouterr().out
    assert main(["--readme", str(readme), "--report", str(report)]) == 0
    assert main(["--readme", str(readme), "--report", str(report), "--check"]) == 0


def test_the_committed_readme_shows_the_committed_report():
    assert main(["--readme", str(ROOT / "README.md"), "--report", str(ROOT / "results/report/report.md"),
                 "--check"]) == 0
