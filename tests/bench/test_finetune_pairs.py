"""``bench.finetune_pairs``: fine-tune seeds from ``bench.qat_stability`` joined to a ``bench.methods`` run."""

from __future__ import annotations

import json

import pytest

from bench import finetune_pairs


def methods_run(folder, seeds=(0, 1)):
    """A one-budget bench.methods report: fine-tune seed 0, smpq − dmpq = +1 pp on seed 0 and −1 pp on seed 1."""
    top1 = {0: {"smpq": 0.80, "dmpq": 0.79, "hawq": 0.70, "uniform": 0.75},
            1: {"smpq": 0.60, "dmpq": 0.61, "hawq": 0.50, "uniform": 0.55}}
    records = [{"seed": s, "budgets": {"avg3 ft0": {"finetune_seed": 0, "differing_layers": {"a": "x"},
                                                    "methods": {m: {"top1": v} for m, v in top1[s].items()}}}}
               for s in seeds]
    folder.mkdir()
    (folder / "methods.json").write_text(json.dumps({"budgets": ["3"], "finetune_seeds": [0], "seeds": records}))
    return folder


def qat_run(path, top1: dict[str, dict[int, float]]):
    path.write_text(json.dumps({"recipes": {"base": {"rows": {"0": {"top1": top1}}}}}))  # int keys → strings
    return path


def test_extra_fine_tune_seeds_become_pairs_of_the_methods_run(tmp_path, capsys):
    run = methods_run(tmp_path / "m")
    extra0 = qat_run(tmp_path / "q0.json", {"smpq": {1: 0.82}, "dmpq": {1: 0.78}, "uniform": {1: 0.76}})
    extra1 = qat_run(tmp_path / "q1.json", {"smpq": {1: 0.62}, "dmpq": {1: 0.60}, "uniform": {1: 0.54}})
    result = finetune_pairs.main(["--methods", str(run), "--extra", f"0={extra0}", f"1={extra1}",
                                  "--out", str(tmp_path / "pairs.json")])
    gap = result["paired_gaps"][0]
    assert result["finetune_seeds"] == [0, 1] and gap["pairs"] == 4
    # smpq − dmpq over (seed, ft seed) (0,0) (0,1) (1,0) (1,1): +1, +4, −1, +2 pp
    mean, std = gap["smpq_minus_dmpq"]
    assert mean == pytest.approx(0.015) and std == pytest.approx(0.0208167, abs=1e-7)
    assert gap["smpq_wins_vs_dmpq"] == 3 and "smpq_minus_hawq" not in gap  # hawq has no fine-tune seed 1
    # spread: per (seed, method) variance over ft seeds 0, 1 of smpq, dmpq, uniform (hawq has one run only)
    variances = [(0.02 ** 2) / 2, (0.01 ** 2) / 2, (0.01 ** 2) / 2, (0.02 ** 2) / 2, (0.01 ** 2) / 2, (0.01 ** 2) / 2]
    assert result["finetune_spread"] == pytest.approx((sum(variances) / 6) ** 0.5)
    assert "avg3 smpq − dmpq: +1.50 ± 2.08 pp, smpq wins 3 of 4" in capsys.readouterr().out
    assert json.loads((tmp_path / "pairs.json").read_text())["finetune_seeds"] == [0, 1]


def test_bad_extras_are_one_line_errors_and_write_nothing(tmp_path):
    run = methods_run(tmp_path / "m")
    extra = qat_run(tmp_path / "q.json", {"smpq": {1: 0.8}})
    other = qat_run(tmp_path / "q2.json", {"smpq": {2: 0.8}})
    out = tmp_path / "pairs.json"
    cases = [(["x=1"], r"^error: --extra 'x=1': expected SEED=FILE"),
             ([f"0={extra}", f"7={extra}"], r"^error: --extra seed\(s\) \[7\] are not in the --methods run$"),
             ([f"0={extra}"], r"^error: seed 1 of the --methods run has no --extra$"),
             ([f"0={extra}", f"1={other}"], r"^error: seed 1's --extra has fine-tune seeds \[2\], not \[1\]$")]
    for extras, message in cases:
        with pytest.raises(SystemExit, match=message):
            finetune_pairs.main(["--methods", str(run), "--extra", *extras, "--out", str(out)])
    (tmp_path / "slow.json").write_text(json.dumps({"recipes": {"slow": {}}}))  # no default recipe
    cases = [([f"0={tmp_path / 'missing.json'}", f"1={extra}"], r"^error: .*missing.json: file not found"),
             ([f"0={tmp_path / 'slow.json'}", f"1={extra}"], r"^error: seed 0's --extra has no 'base'")]
    for extras, message in cases:
        with pytest.raises(SystemExit, match=message):
            finetune_pairs.main(["--methods", str(run), "--extra", *extras, "--out", str(out)])
    report = json.loads((run / "methods.json").read_text())
    (run / "methods.json").write_text(json.dumps(report | {"budgets": ["2.5", "3"]}))
    with pytest.raises(SystemExit, match=r"^error: --methods has budgets \['2.5', '3'\]; only a one-budget run"):
        finetune_pairs.main(["--methods", str(run), "--extra", f"0={extra}", f"1={extra}", "--out", str(out)])
    assert not out.exists()
