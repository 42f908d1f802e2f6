"""The one training loop, shared by pretraining, supernet training and QAT fine-tuning.

Metrics leave through callbacks (the stages forward them to MLflow): ``on_epoch`` once per epoch and
``on_step`` at every tenth of an epoch (the progress marks of ``smpq.progress``: a bar on a terminal, a
log line with rate and ETA without one), with the train loss/top-1 of the steps since the last mark, so
even a one-epoch fine-tune has a curve. Extra per-step work (e.g. the supernet's α update on
``search_val``) plugs in through ``before_step``.

``execution`` (``smpq.device``) says where: batches move to its device, forwards run under its autocast
precision, and in a DDP run (``smpq.distributed``) the loop steps a DDP wrapper of the model on each
process's shard of the global batch; the metrics are then those of the global batch on every process.
One process in fp32 runs exactly the operations it ran before devices existed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from smpq.config import TrainConfig
from smpq.device import ONE_CPU_PROCESS, Execution
from smpq.distributed import all_reduce_sum, batch_loss, wrap
from smpq.errors import TrainingDiverged
from smpq.progress import Progress

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int, dict[str, float]], None]  # (global step, train metrics of the last window)
StepHook = Callable[[int], None]


@dataclass
class Batches:
    """A loader plus how to position it at an epoch (seeded order per epoch, see ``smpq.data``)."""

    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        return self.loader

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum; weight decay from the recipe."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


ONECYCLE_MIN_STEPS = 8  # below this, OneCycleLR's warm-up phase is < 2 steps (4 steps divide by zero)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step learning-rate schedule: one-cycle (Smith 2018), cosine to zero, or constant.

    Works for any positive number of steps: a one-cycle run shorter than ``ONECYCLE_MIN_STEPS`` uses the
    same cosine warm-up and decay (lr/25 -> lr -> lr/2.5e5) as a step function, without momentum cycling.
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle" and total >= ONECYCLE_MIN_STEPS:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _one_cycle(step, total))
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _one_cycle(step: int, total: int, pct_start: float = 0.25) -> float:
    """OneCycleLR's cosine factor of max_lr at ``step`` of ``total``, defined for every total >= 1."""
    if total == 1:
        return 1.0
    peak = round(pct_start * (total - 1))  # a whole step, so that short runs reach max_lr
    start, end = 1 / 25, 1 / 25 / 1e4
    if step <= peak:
        return 1.0 if peak == 0 else 1 + (start - 1) * (1 + math.cos(math.pi * step / peak)) / 2
    frac = min(1.0, (step - peak) / (total - 1 - peak))
    return end + (1 - end) * (1 + math.cos(math.pi * frac)) / 2


def train(model: nn.Module, loader, cfg: TrainConfig, *, eval_loader=None, on_epoch: EpochCallback | None = None,
          on_step: StepCallback | None = None, before_step: StepHook | None = None, desc: str = "train",
          progress: bool = True, execution: Execution = ONE_CPU_PROCESS) -> list[dict[str, float]]:
    """Train ``model`` (already on ``execution.device``) with the recipe ``cfg``; one metrics dict per epoch."""
    optimizer = make_optimizer((p for p in model.parameters() if p.requires_grad), cfg)
    scheduler = make_scheduler(optimizer, cfg, len(loader))
    return fit(model, loader, optimizer, epochs=cfg.epochs, scheduler=scheduler, eval_loader=eval_loader,
               on_epoch=on_epoch, on_step=on_step, before_step=before_step, desc=desc, progress=progress,
               execution=execution)


def fit(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *, epochs: int, scheduler=None,
        eval_loader=None, on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None,
        before_step: StepHook | None = None, after_step: StepHook | None = None, desc: str = "train",
        progress: bool = True, execution: Execution = ONE_CPU_PROCESS,
        find_unused: bool = False) -> list[dict[str, float]]:
    """Cross-entropy training for ``epochs``; evaluates ``eval_loader`` after each epoch if given.

    ``before_step(global_step)`` runs before every weight step (the DARTS-style α step, a single-path draw),
    ``after_step(global_step)`` after it; ``on_step(step, metrics)`` at each tenth of an epoch with
    ``step`` (steps done), fractional ``epoch``, ``train_loss``/``train_top1`` since the last mark, ``lr``.
    A non-finite loss stops training with ``TrainingDiverged`` naming the epoch and step. ``find_unused``:
    some parameters may get no gradient in a step (DDP must then look for them).
    """
    forward = wrap(model, execution, find_unused=find_unused)
    scaler = execution.grad_scaler()
    batches = Batches(loader)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        totals, window = _Totals(), _Totals()
        bar = Progress(len(batches), f"{desc} epoch {epoch + 1}/{epochs}", bar=progress and execution.is_main)
        for images, labels in batches.epoch(epoch):
            images, labels = execution.to_device(images), execution.to_device(labels)
            if before_step is not None:
                before_step(step)
                model.train()
            with execution.autocast():
                logits = forward(images)
                loss, stats = batch_loss(logits, labels, execution)
            _check_finite(stats, epoch, step, desc)
            optimizer.zero_grad(set_to_none=True)
            _step(loss, optimizer, scaler)
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step(step)
            totals.add(*stats)
            window.add(*stats)
            step += 1
            if bar.update(loss=totals.loss, top1=totals.top1):
                if on_step is not None:
                    on_step(step, {"step": step, "epoch": epoch + bar.n / max(len(batches), 1),
                                   "train_loss": window.loss, "train_top1": window.top1,
                                   "lr": optimizer.param_groups[0]["lr"]})
                window = _Totals()
        bar.close()
        metrics = {"train_loss": totals.loss, "train_top1": totals.top1,
                   "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - start}
        if eval_loader is not None:
            metrics.update({f"val_{k}": v for k, v in evaluate(model, eval_loader, execution=execution).items()})
        metrics["epoch"] = epoch + 1
        log.info("%s epoch %d/%d: %s", desc, epoch + 1, epochs, _fmt(metrics))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
    return history


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and optimizer step, through the fp16 loss scaler when there is one."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, progress: bool = False, desc: str = "eval",
             execution: Execution = ONE_CPU_PROCESS) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (fraction in [0, 1]) in eval mode, in fp32; in a DDP run each
    process evaluates its shard and the totals are summed over the processes."""
    was_training = model.training
    model.eval()
    totals = _Totals()
    for images, labels in tqdm(Batches(loader).epoch(0), desc=desc, disable=None if progress else True,
                               leave=False):
        images, labels = execution.to_device(images), execution.to_device(labels)
        logits = model(images)
        if labels.numel():
            loss = nn.functional.cross_entropy(logits, labels)
            totals.add(labels.numel(), float(loss) * labels.numel(), int((logits.argmax(dim=1) == labels).sum()))
    model.train(was_training)
    if execution.distributed:
        totals.n, totals.loss_sum, totals.correct = all_reduce_sum([totals.n, totals.loss_sum, totals.correct],
                                                                   execution)
    return {"loss": totals.loss, "top1": totals.top1}


class _Totals:
    """Running sample-weighted loss and accuracy."""

    def __init__(self) -> None:
        self.n = 0
        self.loss_sum = 0.0
        self.correct = 0

    def add(self, n: int, loss_sum: float, correct: int) -> None:
        """One batch: its examples, summed loss and correct predictions."""
        self.n += n
        self.loss_sum += loss_sum
        self.correct += correct

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.n, 1)

    @property
    def top1(self) -> float:
        return self.correct / max(self.n, 1)


def _check_finite(stats: tuple[int, float, int], epoch: int, step: int, desc: str) -> None:
    """``stats`` are the global batch's, so every process of a DDP run stops at the same step."""
    value = stats[1] / max(stats[0], 1)
    if not math.isfinite(value):
        raise TrainingDiverged(f"{desc}: loss became {value} at epoch {epoch + 1}, step {step}; "
                               "lower the learning rate (lr in params.yaml) or check the input data")


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def iterate_forever(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches over successive epochs (for the α steps that sample ``search_val``)."""
    epoch = 0
    batches = Batches(loader)
    while True:
        yield from batches.epoch(epoch)
        epoch += 1
