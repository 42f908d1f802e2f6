"""The machine a run's numbers come from, named in its report: float results differ between CPU models
(README "Reproducibility"), so a number without its machine cannot be compared."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine(cpu_kernels: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The machine a run's numbers come from (float results differ between CPU models, README
    "Reproducibility"): CPU model, cores, torch version and the ``runtime.cpu_kernels`` setting."""
    try:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    cpu = names[0] if names else (platform.processor() or platform.machine())
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, cpu_kernels {cpu_kernels}"
