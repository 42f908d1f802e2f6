"""Stage ``supernet``: DMPQ supernet search (weights on train, α on search_val) and the argmax policy."""

from __future__ import annotations

from pathlib import Path

import torch

from smpq.artifacts import save_state_dict, write_json
from smpq.cost import Budget, bitops, size_bytes
from smpq.device import ONE_CPU_PROCESS, cpu_state
from smpq.supernet import search
from stages.inputs import load_prepared
from stages.launch import place
from stages.plots import write_training_results
from stages.session import parse_args, session
from stages.supernet_inputs import load_supernet


def run(params, *, prepared_dir: Path, pretrain_dir: Path, calibrate_dir: Path, out: Path, results: Path,
        on_epoch=None, execution=ONE_CPU_PROCESS) -> tuple[dict, dict]:
    """``on_epoch(epoch, metrics, alpha_table)`` is called after every epoch; returns (metrics, timings).
    Only the main process of a DDP run writes the outputs."""
    prepared = load_prepared(prepared_dir)
    torch.manual_seed(params.seed)
    supernet, table = load_supernet(params, prepared, pretrain_dir, calibrate_dir)
    supernet = place(supernet, execution)
    cfg = params.supernet
    target = Budget.from_config(cfg.target, table, supernet.fixed).bitops
    train_loader = prepared.loader("train", batch_size=cfg.batch_size, seed=params.seed, shuffle=True,
                                   samples_per_epoch=cfg.samples_per_epoch, execution=execution)
    val_loader = prepared.loader("search_val", batch_size=cfg.batch_size, seed=params.seed + 1, shuffle=True,
                                 execution=execution)
    history = search(supernet, train_loader, val_loader, cfg, target, seed=params.seed, execution=execution,
                     on_epoch=on_epoch and (lambda epoch, m: on_epoch(epoch, m, supernet.alpha_table())))
    argmax = supernet.argmax_policy()
    if execution.is_main:
        save_state_dict(out / "supernet.pt", cpu_state(supernet.state_dict()))
        write_json(out / "alpha.json", supernet.alpha_table())
        argmax.save(out / "dmpq_argmax.yaml")
    expected = supernet.expected_bitops().item()
    metrics = {  # names: stages/run_info.py
        "supernet": {"target_gbitops": target / 1e9, "expected_gbitops": expected / 1e9,
                     "expected_vs_target": expected / target, "alpha_entropy": supernet.alpha_entropy(),
                     "val_top1": history[-1]["val_top1"] if history else None},
        "dmpq_argmax": {"gbitops": bitops(table, argmax) / 1e9, "size_mb": size_bytes(table, argmax) / 1e6,
                        "meets_target": bitops(table, argmax) <= target},
    }
    if not execution.is_main:
        return metrics, {}
    return write_training_results(results, metrics, history, "supernet search")


def log_epoch(tracker, epoch: int, metrics: dict, alpha: dict) -> None:
    tracker.log_metrics(metrics, step=epoch)
    tracker.log_dict(alpha, f"alpha/epoch_{epoch:03d}.json")


def main(argv: list[str] | None = None) -> None:
    args = parse_args("supernet", ["prepared", "pretrain", "calibrate", "out", "results"], argv)
    with session("supernet", args, sections=("model", "quant", "supernet"), module="stages.supernet", argv=argv) as s:
        metrics, timings = run(s.params, prepared_dir=args.prepared, pretrain_dir=args.pretrain,
                               calibrate_dir=args.calibrate, out=args.out, results=args.results,
                               on_epoch=lambda epoch, m, alpha: log_epoch(s.tracker, epoch, m, alpha),
                               execution=s.execution)
        s.record(metrics, args.results, args.out / "alpha.json", args.out / "dmpq_argmax.yaml", timings=timings)


if __name__ == "__main__":
    main()
