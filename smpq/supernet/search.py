"""DMPQ supernet training (SPEC §3.2): DARTS first-order alternation (Liu et al., ICLR 2019, §2.3 with
ξ = 0) on top of the one shared training loop, ``smpq.train.fit``.

Every training step t, in this order:

1. α step (``before_step``, skipped during the first ``warmup_epochs`` epochs): on the next ``search_val``
   batch, ``α ← Adam(∇_α [CE(f(x_val; w_t, α_t)) + complexity_loss(α_t)])`` with the weights frozen;
2. weight step (``fit`` itself): on the next ``train`` batch, ``w ← SGD(∇_w CE(f(x_train; w_t, α_{t+1})))``.

This is exactly first-order DARTS: the complexity term depends on α only, so ∇_w of the full objective
(task + complexity) is ∇_w of the task loss alone, which is what ``fit`` minimises; α's whole objective is
minimised in step 1. While one step runs, the other side's parameters have ``requires_grad`` switched off
(restored afterwards), so neither backward pass computes gradients it does not use, and ``fit``'s
optimizer (weights only) never sees α.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from smpq.config import SupernetConfig
from smpq.cost import bitops
from smpq.device import ONE_CPU_PROCESS, Execution
from smpq.distributed import average_gradients, batch_loss
from smpq.errors import DataError, TrainingDiverged
from smpq.supernet.single_path import SinglePathSteps
from smpq.supernet.supernet import Supernet
from smpq.train import EpochCallback, fit, iterate_forever

log = logging.getLogger(__name__)

ALPHA_BETAS = (0.5, 0.999)  # Adam betas for α, as in DARTS and EdMIPS
SINGLE_PATH_STREAM = 7  # the single-path draws' own random stream of the run's seed


def search(supernet: Supernet, train_loader, val_loader, cfg: SupernetConfig, target_bitops: float, *,
           seed: int = 0, on_epoch: EpochCallback | None = None, progress: bool = True,
           execution: Execution = ONE_CPU_PROCESS) -> list[dict[str, float]]:
    """Train weights on ``train_loader`` and α on ``val_loader`` (search_val) for ``cfg.epochs`` epochs.

    Weights: SGD (lr, momentum, weight decay) with a cosine schedule over all steps; α: Adam
    (``alpha_lr``, betas (0.5, 0.999), ``alpha_weight_decay``), one step per weight step, on the task loss
    plus ``supernet.complexity_loss(target_bitops, complexity_weight, complexity_form)``. ``val_loader``
    also gives the per-epoch validation metrics. Runs with no coalition mask (restored afterwards), except on
    the ``cfg.single_path`` fraction of weight steps (drawn with ``seed``): one candidate per group.
    Returns ``fit``'s per-epoch metrics extended with ``alpha_task_loss``, ``complexity_loss``,
    ``alpha_steps``, ``expected_gbitops``, ``argmax_gbitops``, ``target_gbitops`` and ``alpha_entropy``.
    ``execution``: the supernet is already on its device; weight steps run at its precision, α steps in fp32;
    in a DDP run both gradients are averaged over the processes (the single-path draws, seeded alike, agree).
    """
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0 or len(val_loader) == 0:
        raise DataError("supernet search needs non-empty train and search_val loaders; check data.search_val_size "
                        "and data.train_size in params.yaml")
    weights, alphas = supernet.weight_parameters(), supernet.alpha_parameters()
    optimizer = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs * steps_per_epoch))
    alpha_step = AlphaStep(supernet, iterate_forever(val_loader), cfg, target_bitops,
                           warmup_steps=cfg.warmup_epochs * steps_per_epoch, execution=execution)
    before, after = alpha_step, None
    if cfg.single_path > 0:
        paths = SinglePathSteps(supernet, cfg.single_path, np.random.default_rng([seed, SINGLE_PATH_STREAM]))
        before, after = (lambda step: (alpha_step(step), paths.before(step))), paths.after
    _set_requires_grad(alphas, False)
    try:
        with supernet.coalition(None):
            return fit(supernet, train_loader, optimizer, epochs=cfg.epochs, scheduler=scheduler,
                       eval_loader=val_loader, on_epoch=alpha_step.epoch_callback(on_epoch),
                       before_step=before, after_step=after, desc="supernet", progress=progress,
                       execution=execution, find_unused=cfg.single_path > 0)
    finally:
        _set_requires_grad(alphas, True)
        _set_requires_grad(weights, True)


class AlphaStep:
    """The α half of the alternation, called by ``fit`` before every weight step (``before_step``)."""

    def __init__(self, supernet: Supernet, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                 cfg: SupernetConfig, target_bitops: float, warmup_steps: int,
                 execution: Execution = ONE_CPU_PROCESS) -> None:
        self.supernet = supernet
        self.execution = execution
        self.batches = batches
        self.cfg = cfg
        self.target_bitops = float(target_bitops)
        self.warmup_steps = warmup_steps
        self.alphas = supernet.alpha_parameters()
        self.weights = supernet.weight_parameters()
        self.optimizer = torch.optim.Adam(self.alphas, lr=cfg.alpha_lr, betas=ALPHA_BETAS,
                                          weight_decay=cfg.alpha_weight_decay)
        supernet.complexity_loss(self.target_bitops, cfg.complexity_weight, cfg.complexity_form)  # validates
        self._reset()

    def __call__(self, step: int) -> None:
        if step < self.warmup_steps:
            return
        images, labels = (self.execution.to_device(t) for t in next(self.batches))
        _set_requires_grad(self.weights, False)
        _set_requires_grad(self.alphas, True)
        try:
            self.supernet.train()
            task, stats = batch_loss(self.supernet(images), labels, self.execution)
            complexity = self.supernet.complexity_loss(self.target_bitops, self.cfg.complexity_weight,
                                                       self.cfg.complexity_form)
            loss = task + complexity
            # the global batch's value, so that every process of a DDP run stops at the same step
            value = float(loss.detach()) if not self.execution.distributed else \
                stats[1] / stats[0] + float(complexity.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"supernet α step {step}: loss became {value}; "
                                       "lower supernet.alpha_lr or supernet.complexity_weight in params.yaml")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(self.alphas, self.execution)
            self.optimizer.step()
        finally:
            _set_requires_grad(self.alphas, False)
            _set_requires_grad(self.weights, True)
        self._task_sum += float(task.detach()) if not self.execution.distributed else stats[1] / stats[0]
        self._complexity_sum += float(complexity.detach())
        self._steps += 1

    def epoch_callback(self, on_epoch: EpochCallback | None) -> EpochCallback:
        """Wrap ``on_epoch``: add the α-side metrics to ``fit``'s (in place, so the history has them)."""
        def callback(epoch: int, metrics: dict[str, float]) -> None:
            metrics.update(self._epoch_metrics())
            log.info("supernet epoch %d: expected %.4g GBitOps (argmax %.4g, target %.4g), α entropy %.3f, "
                     "α steps %d", epoch, metrics["expected_gbitops"], metrics["argmax_gbitops"],
                     metrics["target_gbitops"], metrics["alpha_entropy"], metrics["alpha_steps"])
            self._reset()
            if on_epoch is not None:
                on_epoch(epoch, metrics)
        return callback

    def _epoch_metrics(self) -> dict[str, float]:
        steps = max(self._steps, 1)
        with torch.no_grad():
            expected = float(self.supernet.expected_bitops())
        argmax = bitops(self.supernet.table, self.supernet.argmax_policy())
        return {
            "alpha_task_loss": self._task_sum / steps if self._steps else math.nan,
            "complexity_loss": self._complexity_sum / steps if self._steps else math.nan,
            "alpha_steps": float(self._steps),
            "expected_gbitops": expected / 1e9,
            "argmax_gbitops": argmax / 1e9,
            "target_gbitops": self.target_bitops / 1e9,
            "alpha_entropy": self.supernet.alpha_entropy(),
        }

    def _reset(self) -> None:
        self._task_sum = self._complexity_sum = 0.0
        self._steps = 0


def _set_requires_grad(params: list[nn.Parameter], flag: bool) -> None:
    for param in params:
        param.requires_grad_(flag)

