"""Stage ``sensitivity``: the Hessian sensitivity Ω of every bit-width candidate, for the ``hawq`` method.

Average Hessian traces (Hutchinson, on seeded ``search_val`` batches of the full-precision model) of each
searchable layer's weight and input activation, and HAWQ-V3's Ω(l, b) = Tr(H_l)/n_l · ‖Q_b(X_l) − X_l‖² with
the calibrated LSQ steps (``smpq.sensitivity``). Independent of the supernet: it reads ``prepare``,
``pretrain`` and ``calibrate`` only. ``select`` minimises the total Ω under the budget.
"""

from __future__ import annotations

import time
from pathlib import Path

from smpq.artifacts import read_json, write_json
from smpq.cost import CostTable
from smpq.data.seeding import torch_generator
from smpq.quant import CALIBRATION_FILE, Calibration
from smpq.sensitivity import SENSITIVITY_FILE
from smpq.sensitivity.hutchinson import layer_traces
from smpq.sensitivity.omega import activation_errors, omega_scores, usable_traces, weight_errors
from stages.inputs import MODEL_FILE, build_model, load_prepared
from stages.session import parse_args, session

PROBE_STREAM = 16  # the generator stream of the Rademacher probes (smpq.data.seeding)


def run(params, *, prepared_dir: Path, pretrain_dir: Path, calibrate_dir: Path, out: Path, results: Path
        ) -> tuple[dict, dict]:
    """Writes ``sensitivity.json`` and ``metrics.json``; returns (metrics, timings)."""
    start, cfg, quant = time.perf_counter(), params.hawq, params.quant
    prepared, table = load_prepared(prepared_dir), CostTable.load(calibrate_dir)
    calibration = Calibration.load(calibrate_dir / CALIBRATION_FILE)
    model = build_model(params, prepared, pretrain_dir / MODEL_FILE)
    loader = prepared.loader("search_val", batch_size=cfg.batch_size, seed=params.seed, shuffle=True)
    loader.set_epoch(0)
    batches = [batch for batch, _ in zip(loader, range(cfg.batches))]
    layers, modules = table.searchable, dict(model.named_modules())
    found = layer_traces(model, layers, batches, probes=cfg.probes, tolerance=cfg.tolerance,
                         generator=torch_generator(params.seed, PROBE_STREAM))
    traces, clamped = usable_traces(found["traces"])
    errors = activation_errors(model, layers, calibration, (images for images, _ in batches), quant.a_bits)
    for name in layers:
        errors |= weight_errors(modules[name], name, calibration, quant.w_bits)
    omega = omega_scores(traces, errors)
    estimate = found["estimate"]
    totals = {"hvps": estimate.hvps, "rounds": estimate.rounds, "samples": estimate.samples,
              "converged": estimate.converged, "clamped": len(clamped), "probes": cfg.probes,
              "batches": len(batches), "batch_size": cfg.batch_size}
    write_json(out / SENSITIVITY_FILE, {
        "traces": [{"layer": layer, "kind": kind, "trace": mean, "stderr": stderr, "clamped": (layer, kind) in clamped}
                   for (layer, kind), (mean, stderr) in found["traces"].items()],
        "candidates": [{"layer": layer, "kind": kind, "bits": bits, "error": errors[(layer, kind, bits)],
                        "omega": value} for (layer, kind, bits), value in omega.items()],
        "totals": totals})
    write_json(results / "metrics.json", {"sensitivity": totals})  # names: stages/run_info.py
    return {"sensitivity": totals}, {"wall_seconds": time.perf_counter() - start}


def trace_metrics(found: dict) -> dict:
    """``sensitivity.trace.<layer>.<kind>`` and ``….stderr``: each average trace for MLflow."""
    return {"sensitivity": {"trace": {f"{t['layer']}.{t['kind']}": t["trace"] for t in found["traces"]},
                            "trace_stderr": {f"{t['layer']}.{t['kind']}": t["stderr"] for t in found["traces"]}}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args("sensitivity", ["prepared", "pretrain", "calibrate", "out", "results"], argv)
    with session("sensitivity", args, sections=("quant", "hawq")) as s:
        metrics, timings = run(s.params, prepared_dir=args.prepared, pretrain_dir=args.pretrain,
                               calibrate_dir=args.calibrate, out=args.out, results=args.results)
        s.record(metrics | trace_metrics(read_json(args.out / SENSITIVITY_FILE)), args.results,
                 args.out / SENSITIVITY_FILE, timings=timings)


if __name__ == "__main__":
    main()
