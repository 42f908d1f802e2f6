"""Where training and the game run: the device (``runtime.device``), the autocast precision
(``runtime.precision``) and the process group of a DDP run, bundled as one ``Execution``.

What runs in which precision: with ``bf16``/``fp16`` the training forwards (convolutions, linear layers,
the loss) run under ``torch.autocast``; every LSQ quantizer leaves autocast and works in fp32 (the step
size, the division onto the integer grid, the rounding and the clamp: a bf16 grid of 8-bit codes would
round codes onto each other), as do the optimizers, the master weights, α, BN statistics and evaluation.
``fp16`` on CUDA scales the loss (``torch.amp.GradScaler``) so small gradients do not flush to zero.
``fp32`` (the default) uses no autocast at all: the same code path, and bits, as before devices existed.

Nothing here reads the environment: the stage layer resolves the device and the process group
(``torchrun``'s ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) and passes them down.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from smpq.errors import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# An in-memory split moves to an accelerator once per stage if its uint8 images take at most this fraction
# of the device's free memory; the rest stays for the model, activations and the optimizer.
DEVICE_DATA_FRACTION = 0.25
# The batched Shapley game (``shapley.coalitions_per_forward: null``) lets K coalitions' activations take at
# most this fraction of the free memory (the recorded forward's outputs per coalition: an upper bound).
DEVICE_BATCH_FRACTION = 0.5


def resolve_device(name: str, *, cuda_available: bool | None = None, cuda_count: int | None = None,
                   local_rank: int = 0) -> torch.device:
    """``runtime.device`` -> a ``torch.device``: ``auto`` is CUDA when available (the worker's own GPU,
    ``cuda:<local_rank>``, in a DDP run) and the CPU otherwise; ``cuda`` without CUDA is a one-line error."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if name == "cpu" or (name == "auto" and not available):
        return torch.device("cpu")
    if not available:
        raise ConfigError(f"runtime.device: {name} requested but this machine has no usable CUDA device "
                          f"(torch {torch.__version__} sees none); set runtime.device: cpu or auto")
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    index = int(name.split(":")[1]) if ":" in name else local_rank
    if index >= count:
        raise ConfigError(f"runtime.device: {name} needs GPU {index} but this machine has {count} "
                          f"(cuda:0 to cuda:{count - 1}); choose one of them, or fewer runtime.processes")
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Execution:
    """Device, autocast precision and this process's place in the DDP group (rank 0 of 1: no group)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    loader_workers: int = 0  # runtime.loader_workers: processes building batches (smpq.data.loaders)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes outputs, logs metrics and shows progress."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast of a training forward at ``precision``; no context at all for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 on CUDA (bf16 has fp32's range and needs none)."""
        if self.precision == "fp16" and self.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the device (no copy when it is there already; asynchronous from pinned memory)."""
        return tensor.to(self.device, non_blocking=True)


def split_fits(nbytes: int, device: torch.device, *, free_bytes: int | None = None) -> bool:
    """Whether a split of ``nbytes`` moves to ``device`` once per stage: at most ``DEVICE_DATA_FRACTION`` of
    the device's free memory. The CPU is where splits load, so they always "fit" there."""
    if device.type == "cpu":
        return True
    return nbytes <= DEVICE_DATA_FRACTION * _free(device, free_bytes)


def fit_count(nbytes_each: int, device: torch.device, *, free_bytes: int | None = None) -> int:
    """How many copies of ``nbytes_each`` (e.g. one coalition's activations in the batched Shapley game) fit in
    ``DEVICE_BATCH_FRACTION`` of the device's free memory; at least 1, and 1 on the CPU (nothing to gain)."""
    if device.type == "cpu" or nbytes_each <= 0:
        return 1
    return max(1, int(DEVICE_BATCH_FRACTION * _free(device, free_bytes) // nbytes_each))


def _free(device: torch.device, free_bytes: int | None) -> int:
    """``free_bytes`` when given (tests), else the device's free memory (CUDA; 0 for others)."""
    if free_bytes is not None:
        return free_bytes
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0


def cpu_state(state: dict[str, Any]) -> dict[str, Any]:
    """A ``state_dict`` with every tensor on the CPU, so the checkpoint loads on any machine (tensors already
    on the CPU are kept as they are: a CPU run writes the same bytes as before)."""
    if all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in state.values()):
        return state  # the very object (an OrderedDict with torch's ``_metadata``): identical bytes
    moved = type(state)((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    if hasattr(state, "_metadata"):
        moved._metadata = state._metadata  # type: ignore[attr-defined]
    return moved


ONE_CPU_PROCESS = Execution()  # the default: one process on the CPU in fp32, as before devices existed
