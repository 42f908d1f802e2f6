"""Stage ``export@<method>``: the fine-tuned policy as ONNX with QDQ pairs and as bit-packed integer weights,
checked against the PyTorch model, with a size report against the cost model (docs/export.md)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from smpq.artifacts import write_json
from smpq.cost import CostTable, bitops
from smpq.export import OPSET, export_model
from smpq.models import load_pretrained
from smpq.policy import Policy
from smpq.quant import CALIBRATION_FILE, Calibration, apply_policy
from stages.finetune import POLICY_FILE
from stages.inputs import MODEL_FILE, build_model, load_prepared
from stages.session import parse_args, session


def run(params, method: str, *, prepared_dir: Path, calibrate_dir: Path, finetune_dir: Path, out: Path,
        results: Path) -> tuple[dict, dict]:
    """Returns (metrics, timings); the metrics are about one method, so unprefixed (stages/run_info.py)."""
    prepared = load_prepared(prepared_dir)
    table = CostTable.load(calibrate_dir)
    policy = Policy.load(finetune_dir / POLICY_FILE)
    calibration = Calibration.load(calibrate_dir / CALIBRATION_FILE)
    quantized = lambda: apply_policy(build_model(params, prepared), policy, calibration)
    model = load_pretrained(quantized(), finetune_dir / MODEL_FILE, name=f"finetune@{method}")
    test = lambda: prepared.loader("test", batch_size=params.finetune.eval_batch_size, seed=params.seed)
    start = time.perf_counter()
    checks = export_model(model, quantized(), input_shape=prepared.input_shape, table=table, policy=policy,
                          out=out, batches=test, threads=torch.get_num_threads())
    seconds = time.perf_counter() - start
    size, onnx, reference = checks.pop("size"), checks["onnx"], checks["integer_reference"]
    metrics = {"method": method, "policy": policy.label(exclude=(table.first, table.last)),
               "gbitops": bitops(table, policy) / 1e9, "packed_mb": size["packed_bytes"] / 1e6,
               "cost_model_mb": size["cost_model_bytes"] / 1e6, "onnx_mb": size["onnx_bytes"] / 1e6,
               "top1_pytorch": onnx["top1_pytorch"], "top1_onnx": onnx["top1_onnx"],
               "top1_agreement": onnx["top1_agreement"], "max_logit_gap": onnx["max_logit_gap"],
               "integer_reference_error": reference["max_abs_error"]}
    write_json(results / "metrics.json", metrics)
    write_json(results / "size_report.json", size)
    write_json(results / "checks.json", checks)
    return metrics, {"export_seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    args = parse_args("export", ["prepared", "calibrate", "finetune", "out", "results"], argv,
                      extra=lambda p: p.add_argument("--method", required=True))
    with session(f"export@{args.method}", args, sections=("model",)) as s:
        s.tracker.log_params({"method": args.method, "onnx.opset": OPSET})
        metrics, timings = run(s.params, args.method, prepared_dir=args.prepared, calibrate_dir=args.calibrate,
                               finetune_dir=args.finetune, out=args.out, results=args.results)
        s.record(metrics, args.results, args.out, timings=timings)


if __name__ == "__main__":
    main()
