"""Stage ``pretrain``: train (or load and optionally continue) the full-precision model."""

from __future__ import annotations

from pathlib import Path

import torch

from smpq.artifacts import save_state_dict
from smpq.device import ONE_CPU_PROCESS, cpu_state
from smpq.train import evaluate, train
from stages.inputs import MODEL_FILE, build_model, load_prepared
from stages.launch import place
from stages.plots import write_training_results
from stages.session import parse_args, session


def run(params, *, prepared_dir: Path, out: Path, results: Path, on_epoch=None, on_step=None,
        execution=ONE_CPU_PROCESS) -> tuple[dict, dict]:
    """Returns (metrics, timings); only the main process of a DDP run writes the outputs."""
    prepared = load_prepared(prepared_dir)
    cfg = params.pretrain
    torch.manual_seed(params.seed)
    pretrained = Path(params.model.pretrained) if params.model.pretrained else None
    model = place(build_model(params, prepared, pretrained), execution)
    train_loader = prepared.loader("train", batch_size=cfg.batch_size, seed=params.seed, shuffle=True,
                                   augment=cfg.augment, samples_per_epoch=cfg.samples_per_epoch, execution=execution)
    val_loader = prepared.loader("search_val", batch_size=cfg.eval_batch_size, seed=params.seed, execution=execution)
    steps: list[dict] = []
    history = train(model, train_loader, cfg, eval_loader=val_loader, on_epoch=on_epoch, desc="pretrain",
                    on_step=lambda step, m: (steps.append(m), on_step and on_step(step, m)), execution=execution)
    test = evaluate(model, prepared.loader("test", batch_size=cfg.eval_batch_size, seed=params.seed,
                                           execution=execution), desc="test", execution=execution)
    metrics = {"fp": {"top1": test["top1"], "loss": test["loss"]}}  # names: stages/run_info.py
    if not execution.is_main:
        return metrics, {}
    save_state_dict(out / MODEL_FILE, cpu_state(model.state_dict()))
    return write_training_results(results, metrics, history, "pretrain (full precision)", steps)


def main(argv: list[str] | None = None) -> None:
    args = parse_args("pretrain", ["prepared", "out", "results"], argv)
    with session("pretrain", args, sections=("model", "pretrain"), module="stages.pretrain", argv=argv) as s:
        metrics, timings = run(s.params, prepared_dir=args.prepared, out=args.out, results=args.results,
                               on_epoch=lambda epoch, m: s.tracker.log_metrics(m, step=epoch), on_step=s.log_step,
                               execution=s.execution)
        s.record(metrics, args.results, args.out / MODEL_FILE, timings=timings)


if __name__ == "__main__":
    main()
