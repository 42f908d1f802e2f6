"""Where a stage runs: the device of ``runtime.device``, and for the training stages one or several DDP
processes launched by ``torchrun`` (README "Training on several GPUs or machines").

The stage layer is the one place that reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``; ``MASTER_ADDR``/``MASTER_PORT`` are read by ``torch.distributed`` itself): it creates the
process group (gloo on the CPU, NCCL on CUDA) and hands ``smpq`` an ``Execution``. With
``runtime.processes: N > 1`` a training stage started by ``dvc repro`` (not yet a torchrun worker)
re-launches itself as ``python -m torch.distributed.run --standalone --nproc_per_node=N -m stages.<name>``
with the same arguments and exits with its status, so dvc.yaml needs no edit.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from smpq.config import RuntimeConfig
from smpq.device import Execution, resolve_device
from smpq.distributed import shard_batches, synchronise_batchnorm
from smpq.errors import ConfigError

log = logging.getLogger("smpq.stage")

WORKER_VARIABLE = "LOCAL_RANK"  # set by torchrun in every worker; its absence means "not launched yet"
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a worker waiting this long on the others gives up


def is_worker(environ: Mapping[str, str]) -> bool:
    return WORKER_VARIABLE in environ


def torchrun_command(module: str, processes: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``python -m <module> <argv>`` as ``processes`` DDP workers on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", module, *argv]


def relaunch(module: str, runtime: RuntimeConfig, argv: Sequence[str] | None,
             environ: Mapping[str, str]) -> int | None:
    """With ``runtime.processes > 1`` outside torchrun: run the stage under torchrun and return its exit
    status; otherwise None (run here)."""
    if runtime.processes == 1 or is_worker(environ):
        return None
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = torchrun_command(module, runtime.processes, argv)
    log.info("runtime.processes=%d: %s", runtime.processes, " ".join(command))
    return subprocess.run(command, env=dict(environ)).returncode


def start(runtime: RuntimeConfig, environ: Mapping[str, str]) -> Execution:
    """This process's ``Execution``: rank and world size from torchrun (one process without it), the device
    resolved (``auto`` and ``cuda``: this worker's own GPU, ``cuda:<LOCAL_RANK>``), and the process group
    created when there are two or more processes."""
    rank, world = int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1))
    local_rank = int(environ.get("LOCAL_RANK", 0))
    device = resolve_device(runtime.device, local_rank=local_rank)
    execution = Execution(device=device, precision=runtime.precision, rank=rank, world_size=world,
                          loader_workers=runtime.loader_workers)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if runtime.precision == "fp16" and device.type == "cpu":
        raise ConfigError("runtime.precision: fp16 needs a CUDA device (this run is on the CPU); use bf16 or fp32")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=COLLECTIVE_TIMEOUT)
    if not execution.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # progress and metrics come from rank 0 alone
    log.info("device %s, precision %s, process %d of %d", device, runtime.precision, rank + 1, world)
    return execution


def stop(execution: Execution) -> None:
    """Leave the process group (all processes reach this together)."""
    if execution.distributed and dist.is_initialized():
        dist.destroy_process_group()


def place(model: torch.nn.Module, execution: Execution) -> torch.nn.Module:
    """``model`` on the device; in a DDP run its batch norm synchronised across the processes and its
    activation quantizers told the batch is sharded."""
    if execution.distributed:
        shard_batches(synchronise_batchnorm(model), execution.world_size)
    return model.to(execution.device)
