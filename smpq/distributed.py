"""Data-parallel training across processes with ``torch.distributed`` (launched by ``torchrun``).

Every process holds the whole model and sees a shard of each global batch (``smpq.data`` gives rank ``r``
of ``W`` the examples ``r, r+W, ...`` of the same seeded batch a single process would use), so a run on
``W`` processes follows the single-process run up to floating-point summation order:

- weights: ``DistributedDataParallel`` averages the gradients over the processes; each process's loss is
  its *sum* of cross-entropies times ``W / global batch`` (``batch_loss``), so the average is the
  gradient of the global batch's mean loss even when the last batch does not split evenly;
- batch norm: every BN layer is made synchronous (``synchronise_batchnorm``): in training it normalises
  with the mean and variance of the whole global batch (an autograd-aware all-reduce), and all processes
  keep identical running statistics; torch's own ``SyncBatchNorm`` does the same on CUDA only;
- α (supernet): the architecture gradients are averaged the same way (``average_gradients``).

The process group is created by the stage layer (``stages/launch.py``); this module only uses it.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from smpq.device import Execution


def wrap(model: nn.Module, execution: Execution, *, find_unused: bool = False) -> nn.Module:
    """The module a training step calls: ``model`` itself in one process, else a DDP wrapper around it
    (which still shares ``model``'s parameters; checkpoints are saved from ``model``). ``find_unused``:
    some parameters may get no gradient in a step (the supernet's single-path steps)."""
    if not execution.distributed:
        return model
    device_ids = [execution.device.index] if execution.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=find_unused)


def all_reduce_sum(values: list[float], execution: Execution) -> list[float]:
    """Sums of ``values`` over the processes (as float64); the values themselves in one process."""
    if not execution.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=execution.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_gradients(params: list[nn.Parameter], execution: Execution) -> None:
    """Replace every gradient by its mean over the processes (a missing one counts as zero)."""
    if not execution.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= execution.world_size
    offset = 0
    for param in params:
        param.grad = flat[offset:offset + param.numel()].view_as(param).clone()
        offset += param.numel()


def shard_batches(model: nn.Module, world_size: int) -> nn.Module:
    """Tell every activation quantizer (LSQ) of ``model`` that it sees 1/``world_size`` of each batch, so its
    step-size gradient scale is that of the global batch (exact when the shards are equal in size)."""
    for module in model.modules():  # LSQQuantizer by its attributes: the stages' shared code stays quant-free
        if hasattr(module, "batch_shards") and getattr(module, "channels", 0) is None:
            module.batch_shards = world_size
    return model


class _SynchronisedBatchNorm:
    """Mixed into a BN class: training forwards normalise with the statistics of the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)  # type: ignore[misc]
        return synchronised_batch_norm(self, x)  # type: ignore[arg-type]


@functools.cache
def _synchronised_class(cls: type) -> type:
    return type(f"Synchronised{cls.__name__}", (_SynchronisedBatchNorm, cls), {})


def synchronise_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BN layer of ``model`` synchronous across the process group, in place (same parameters,
    buffers and ``state_dict`` keys; outside a process group of two or more it behaves as before)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _SynchronisedBatchNorm):
            module.__class__ = _synchronised_class(type(module))
    return model


def synchronised_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn``'s training forward with the mean and biased variance of the global batch (two passes, each one
    differentiable all-reduce); running statistics updated with the unbiased variance, as ``bn`` does."""
    dims = [0, *range(2, x.dim())]
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    x = x.float()
    count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
    sums = dist_nn.all_reduce(torch.cat([x.sum(dims), count]))
    n = sums[-1]
    mean = sums[:-1] / n
    centred = x - mean.view(shape)
    var = dist_nn.all_reduce((centred * centred).sum(dims)) / n
    if bn.track_running_stats and bn.running_mean is not None:
        _update_running_stats(bn, mean.detach(), var.detach() * n.detach() / (n.detach() - 1).clamp_min(1))
    out = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


@torch.no_grad()
def _update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
    bn.num_batches_tracked += 1
    momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    bn.running_var.mul_(1 - momentum).add_(var, alpha=momentum)


def batch_loss(logits: torch.Tensor, labels: torch.Tensor,
               execution: Execution) -> tuple[torch.Tensor, tuple[int, float, int]]:
    """(the loss to backpropagate, (examples, summed loss, correct predictions) of the global batch).

    One process: the mean cross-entropy. DDP: this process's summed cross-entropy times ``W / global batch``,
    so DDP's average of the gradients over the ``W`` processes is the gradient of the global batch's mean
    loss even when the last batch does not split evenly; one all-reduce gives the global batch's totals."""
    correct = (logits.detach().argmax(dim=1) == labels).sum()
    if not execution.distributed:
        loss = nn.functional.cross_entropy(logits, labels)
        n = labels.numel()
        return loss, (n, float(loss.detach()) * n, int(correct))
    local = nn.functional.cross_entropy(logits, labels, reduction="sum")
    n, loss_sum, right = all_reduce_sum([float(labels.numel()), float(local.detach()), float(correct)], execution)
    return local * (execution.world_size / n), (int(n), loss_sum, int(right))
