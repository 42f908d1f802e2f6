"""LSQ uniform fake quantizer with learnable step sizes (Esser et al., "Learned Step Size
Quantization", ICLR 2020), initialised at the MSE-optimal step (SPEC §3.1).

Forward (LSQ eq. 1-2): ``x_hat = round(clamp(x / s, Q_min, Q_max)) · s`` with a straight-through
estimator for ``round``. Autograd through this expression gives LSQ eq. 3 for the step gradient:
``d x_hat / d s = round(x/s) − x/s`` inside the range, ``Q_min`` below and ``Q_max`` above; the step
gradient is multiplied by ``g = 1 / sqrt(N · Q_max)`` (LSQ §2.2), N = number of elements sharing one step.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

STEP_EPS = 1e-8  # the smallest step a quantizer uses (see ``positive_step``)
INIT_CANDIDATES = 100  # clipping ranges tried by the MSE initialisation
INIT_MIN_FRACTION = 0.05  # smallest clipping range tried, as a fraction of max|x|
WEIGHT_STEP_GRADS = ("channel", "tensor")  # N of g for per-channel steps (``set_weight_step_grad``)
INIT_CHUNK_ELEMENTS = 2**24  # bounds the [C, candidates, N] error tensor (64 MiB in float32)


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer grid: signed ``[-2^(b-1), 2^(b-1)-1]`` (b in 2..16), unsigned ``[0, 2^b-1]`` (b in 1..16)."""
    low = 2 if signed else 1
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= 16:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{kind} quantizer bits must be an integer in [{low}, 16], got {bits!r}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in forward, identity gradient in backward (straight-through estimator)."""
    return x + (x.round() - x).detach()


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Value of ``x`` in forward, gradient multiplied by ``scale`` in backward (LSQ's step grad scale)."""
    scaled = x * scale
    return (x - scaled).detach() + scaled


def fp32_region(x: torch.Tensor) -> tuple[contextlib.AbstractContextManager, torch.Tensor]:
    """(context, input) for quantizer arithmetic: under autocast (``runtime.precision`` bf16/fp16) the
    context leaves autocast and a half-precision input is cast to fp32, so the step, the integer grid and
    the rounding stay fp32; without autocast, no context and the input unchanged (fp32 runs are untouched)."""
    if not torch.is_autocast_enabled(x.device.type):
        return contextlib.nullcontext(), x
    half = x.dtype in (torch.float16, torch.bfloat16)
    return torch.autocast(x.device.type, enabled=False), x.float() if half else x


def positive_step(step: torch.Tensor) -> torch.Tensor:
    """The step a quantizer uses: ``|step|``, at least ``STEP_EPS``. An SGD update can carry a small step past
    zero; through the absolute value (as brevitas' ``ParameterScaling`` does) it keeps quantizing and learning,
    where a clamp alone pinned it at ``STEP_EPS`` with zero gradient and silenced its channel for good
    (docs/RESULTS.md §0j: whole classifier rows of ``mobilenet_v2`` after QAT)."""
    return step.abs().clamp_min(STEP_EPS)


def fake_quantize(x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``round_ste(clamp(x / step, qmin, qmax)) · step``; ``step`` must broadcast against ``x``."""
    return round_ste(torch.clamp(x / step, qmin, qmax)) * step


def mse_optimal_step(x: torch.Tensor, bits: int, signed: bool, per_channel: bool) -> torch.Tensor:
    """Step minimising ``mean((Q(x) − x)^2)`` over ``INIT_CANDIDATES`` clipping ranges.

    Candidates are ``s_k = f_k · max|x| / Q_max`` with f_k evenly spaced in [0.05, 1]: f = 1 is plain
    max-scaling (no clipping at the top), smaller f trade clipping error for rounding error, which is
    what makes 2-bit start well (the MSE optimum for a Gaussian is far inside max|x|) while 8-bit stays
    close to max-scaling. ``per_channel`` treats dim 0 as channels (returns shape ``[C]``), else a scalar.
    Vectorised over channels and over chunks of candidates of at most ``INIT_CHUNK_ELEMENTS`` values.
    """
    qmin, qmax = quant_range(bits, signed)
    flat = x.detach().float().reshape(x.shape[0], -1) if per_channel else x.detach().float().reshape(1, -1)
    if flat.numel() == 0:
        raise ValueError("cannot initialise a step size from an empty tensor")
    max_abs = flat.abs().amax(dim=1).clamp_min(STEP_EPS)  # [C]
    fractions = torch.linspace(INIT_MIN_FRACTION, 1.0, INIT_CANDIDATES, device=flat.device)
    steps = (max_abs[:, None] * fractions[None, :] / qmax).clamp_min(STEP_EPS)  # [C, K]
    chunk = max(1, min(INIT_CANDIDATES, INIT_CHUNK_ELEMENTS // flat.numel()))
    errors = torch.cat([
        (fake_quantize(flat[:, None, :], part[:, :, None], qmin, qmax) - flat[:, None, :]).pow(2).mean(dim=2)
        for part in steps.split(chunk, dim=1)
    ], dim=1)  # [C, K]
    best = steps.gather(1, errors.argmin(dim=1, keepdim=True)).squeeze(1)
    return best if per_channel else best[0]


class LSQQuantizer(nn.Module):
    """Uniform fake quantizer with learnable step size(s) (LSQ, Esser et al. 2020).

    ``channels=None``: one scalar step for the whole tensor (activations). ``channels=C``: one step per
    slice along dim 0 (output channels of a weight), broadcast over the remaining dims. The initial
    step is 1.0 until ``init_step`` or a calibrated value (``set_step``) replaces it.
    The gradient scale uses N = ``x.numel() / steps`` of the tensor being quantized, i.e. for
    activations the whole batch (elements sharing the one step), for weights the weights of one channel.
    In a DDP run an activation quantizer sees one shard of the global batch: ``batch_shards`` (the number of
    processes, set by ``smpq.distributed.shard_batches``) restores N to the global batch's element count.
    """

    batch_shards = 1  # processes the batch is split across (activation quantizers only); not saved
    tensor_grad_scale = False  # per-channel steps: N counts the whole tensor (``set_weight_step_grad``); not saved

    def __init__(self, bits: int, signed: bool, channels: int | None = None) -> None:
        super().__init__()
        self.qmin, self.qmax = quant_range(bits, signed)
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive integer or None, got {channels!r}")
        self.bits = bits
        self.signed = signed
        self.channels = channels
        self.step = nn.Parameter(torch.ones(channels) if channels is not None else torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region, x = fp32_region(x)
        with region:
            return self._quantize(x)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        step = self._broadcast_step(x)
        n_per_step = x.numel() * self.batch_shards // (1 if self.tensor_grad_scale else self.channels or 1)
        step = grad_scale(step, 1.0 / math.sqrt(max(n_per_step, 1) * self.qmax))
        return fake_quantize(x, positive_step(step), self.qmin, self.qmax)

    @torch.no_grad()
    def init_step(self, x: torch.Tensor) -> None:
        """Set the step(s) to the MSE-optimal value for ``x`` (per channel when ``channels`` is set)."""
        self._check_channels(x)
        self.set_step(mse_optimal_step(x, self.bits, self.signed, per_channel=self.channels is not None))

    @torch.no_grad()
    def set_step(self, step: torch.Tensor) -> None:
        """Copy a step tensor (e.g. from a calibration) into the parameter; shapes must match."""
        step = torch.as_tensor(step)
        if step.shape != self.step.shape:
            raise ValueError(f"step of shape {tuple(step.shape)} does not fit a quantizer with step shape "
                             f"{tuple(self.step.shape)} ({self.extra_repr()})")
        self.step.copy_(step.to(self.step))

    def extra_repr(self) -> str:
        grid = f"[{self.qmin}, {self.qmax}]"
        scope = f"per-channel({self.channels})" if self.channels is not None else "per-tensor"
        return f"bits={self.bits}, signed={self.signed}, grid={grid}, {scope}"

    def _broadcast_step(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return self.step
        self._check_channels(x)
        return self.step.view(self.channels, *([1] * (x.dim() - 1)))

    def _check_channels(self, x: torch.Tensor) -> None:
        if self.channels is not None and (x.dim() == 0 or x.shape[0] != self.channels):
            raise ValueError(f"per-channel quantizer expects {self.channels} channels along dim 0, "
                             f"got a tensor of shape {tuple(x.shape)}")


def set_weight_step_grad(model: nn.Module, mode: str) -> nn.Module:
    """Choose N of LSQ's step gradient scale g = 1/sqrt(N·Q_max) (Esser et al. 2020, §2.2) for every per-channel
    (weight) step of ``model``: ``channel``, the weights that share the step (one channel), or ``tensor``, all
    the weights of the layer, as per-tensor LSQ and lsq-net's per-channel quantizer count them: a step update
    sqrt(C) times smaller, so that small steps (8-bit weights of a depthwise conv, N = 9) are not carried past
    zero (docs/RESULTS.md §0n). Activation steps are per tensor either way. Returns ``model``."""
    if mode not in WEIGHT_STEP_GRADS:
        allowed = " or ".join(map(repr, WEIGHT_STEP_GRADS))
        raise ValueError(f"weight step gradient scale must be {allowed}, got {mode!r}")
    for module in model.modules():
        if isinstance(module, LSQQuantizer) and module.channels is not None:
            module.tensor_grad_scale = mode == "tensor"
    return model
