"""Stage ``finetune@<method>``: quantization-aware training of one method's policy from the FP weights."""

from __future__ import annotations

from pathlib import Path

import torch

from smpq.artifacts import save_state_dict
from smpq.cost import CostTable, bitops, size_bytes
from smpq.device import ONE_CPU_PROCESS, cpu_state
from smpq.policy import Policy
from smpq.quant import CALIBRATION_FILE, Calibration, apply_policy, set_weight_step_grad
from smpq.train import evaluate, train
from stages.inputs import MODEL_FILE, build_model, load_prepared
from stages.launch import place
from stages.plots import write_training_results
from stages.session import parse_args, session

POLICY_FILE = "policy.yaml"  # the fine-tuned policy, beside its model


def run(params, method: str, *, prepared_dir: Path, pretrain_dir: Path, calibrate_dir: Path, select_dir: Path,
        out: Path, results: Path, on_epoch=None, on_step=None, execution=ONE_CPU_PROCESS) -> tuple[dict, dict]:
    """Returns (metrics, timings); the metrics are about one method, so unprefixed (stages/run_info.py).
    Only the main process of a DDP run writes the outputs."""
    prepared = load_prepared(prepared_dir)
    table = CostTable.load(calibrate_dir)
    policy = Policy.load(select_dir / f"{method}.yaml")
    calibration = Calibration.load(calibrate_dir / CALIBRATION_FILE)
    cfg = params.finetune
    seed = params.seed if cfg.seed is None else cfg.seed  # paired comparisons vary the QAT seed alone
    torch.manual_seed(seed)
    model = apply_policy(build_model(params, prepared, pretrain_dir / MODEL_FILE), policy, calibration)
    model = place(set_weight_step_grad(model, cfg.weight_step_grad), execution)
    train_loader = prepared.loader("train", batch_size=cfg.batch_size, seed=seed, shuffle=True,
                                   augment=cfg.augment, samples_per_epoch=cfg.samples_per_epoch, execution=execution)
    val_loader = prepared.loader("search_val", batch_size=cfg.eval_batch_size, seed=params.seed, execution=execution)
    steps: list[dict] = []
    history = train(model, train_loader, cfg, eval_loader=val_loader, on_epoch=on_epoch, desc=f"finetune {method}",
                    on_step=lambda step, m: (steps.append(m), on_step and on_step(step, m)), execution=execution)
    test = evaluate(model, prepared.loader("test", batch_size=cfg.eval_batch_size, seed=params.seed,
                                           execution=execution), desc="test", execution=execution)
    metrics = {"method": method, "policy": policy.label(exclude=(table.first, table.last)),
               "top1": test["top1"], "loss": test["loss"],
               "gbitops": bitops(table, policy) / 1e9, "size_mb": size_bytes(table, policy) / 1e6,
               "epochs": cfg.epochs}
    if not execution.is_main:
        return metrics, {}
    save_state_dict(out / MODEL_FILE, cpu_state(model.state_dict()))
    policy.save(out / POLICY_FILE)
    return write_training_results(results, metrics, history, f"finetune {method} (QAT)", steps)


def main(argv: list[str] | None = None) -> None:
    args = parse_args("finetune", ["prepared", "pretrain", "calibrate", "select", "out", "results"], argv,
                      extra=lambda p: p.add_argument("--method", required=True))
    with session(f"finetune@{args.method}", args, sections=("model", "quant", "finetune"), module="stages.finetune",
                 argv=argv) as s:
        metrics, timings = run(s.params, args.method, prepared_dir=args.prepared, pretrain_dir=args.pretrain,
                               calibrate_dir=args.calibrate, select_dir=args.select, out=args.out,
                               results=args.results, on_epoch=lambda epoch, m: s.tracker.log_metrics(m, step=epoch),
                               on_step=s.log_step, execution=s.execution)
        # the policy's cost unrounded (the MLflow tables round metrics to 3 digits)
        s.tracker.log_params({"policy.gbitops": repr(metrics["gbitops"]), "policy.size_mb": repr(metrics["size_mb"]),
                              "policy": metrics["policy"]})
        s.record(metrics, args.results, args.out / POLICY_FILE, timings=timings)


if __name__ == "__main__":
    main()
