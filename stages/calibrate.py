"""Stage ``calibrate``: the per-layer cost table and an initial step size for every candidate bit-width."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from smpq.artifacts import write_json
from smpq.cost import COST_TABLE_FILE, budget_bitops, cost_table
from smpq.policy import fixed_bits
from smpq.quant import CALIBRATION_FILE, calibrate
from stages.inputs import MODEL_FILE, build_model, load_prepared
from stages.session import parse_args, session


def run(params, *, prepared_dir: Path, pretrain_dir: Path, out: Path, results: Path) -> dict:
    prepared = load_prepared(prepared_dir)
    model = build_model(params, prepared, pretrain_dir / MODEL_FILE)
    table = cost_table(model, prepared.input_shape)
    cfg, quant = params.calibrate, params.quant
    loader = prepared.loader("train", batch_size=cfg.batch_size, seed=params.seed, shuffle=True)
    batches = (images for images, _ in islice(iter(loader), cfg.batches))
    fixed = fixed_bits(quant.first_last, table)
    calibration = calibrate(model, table.searchable, batches, w_bits=quant.w_bits, a_bits=quant.a_bits,
                            extra=fixed, max_activation_samples=cfg.max_activation_samples, seed=params.seed)
    calibration.save(out / CALIBRATION_FILE)
    table.save(out)
    metrics = {"calibrate": {  # names: stages/run_info.py
        "layers": len(table.layers),
        "searchable_layers": len(table.searchable),
        "mmacs": table.total_macs / 1e6,
        **{f"uniform_w{b}a{b}_gbitops": budget_bitops(table, fixed, avg_bits=b) / 1e9 for b in quant.w_bits},
    }}
    write_json(results / "metrics.json", metrics)
    write_json(results / "calibration_summary.json", calibration.summary())
    return metrics


def main(argv: list[str] | None = None) -> None:
    args = parse_args("calibrate", ["prepared", "pretrain", "out", "results"], argv)
    with session("calibrate", args, sections=("model", "quant", "calibrate")) as s:
        metrics = run(s.params, prepared_dir=args.prepared, pretrain_dir=args.pretrain, out=args.out,
                      results=args.results)
        s.record(metrics, args.results, args.out / COST_TABLE_FILE)


if __name__ == "__main__":
    main()
