"""Kernel pinning (``runtime.cpu_kernels: pinned``): the same float results on any x86-64 CPU model.

ATen, oneDNN and MKL pick their kernels per CPU (AVX-512 on one machine, AVX2 on another); sums then run
in another order and the last bits differ, which training amplifies (README "Reproducibility"). Pinned
mode caps every library at one portable instruction set and MKL at its CPU-independent code path. The
libraries read these variables once, when torch loads them, so a stage sets them before importing torch:
``stages/__init__.py`` calls ``pin_from_argv`` when a stage runs as ``python -m stages.<name> --params F``.
"""

from __future__ import annotations

import os
from pathlib import Path

PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's scalar (compiler-vectorised) kernels, no AVX2/AVX-512 paths
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN (convolutions): at most SSE4.1
    "DNNL_MAX_CPU_ISA": "SSE41",  # the same, older name
    "MKL_CBWR": "COMPATIBLE",  # MKL (matmul): conditional bitwise reproducibility across CPUs
}
MODES = ("native", "pinned")


def pin(mode: str, threads: int | None = None, environ: dict | None = None) -> dict[str, str]:
    """Set (and return) the environment of ``mode``: ``pinned`` overrides whatever kernel choice the
    environment made (that is the point); ``threads`` fixes the thread count (sums are split by thread)."""
    environ = os.environ if environ is None else environ
    wanted = dict(PINNED_ENV) if mode == "pinned" else {}
    if threads:
        wanted.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    environ.update(wanted)
    return wanted


def pin_from_argv(argv: list[str]) -> dict[str, str]:
    """Pin as ``runtime`` in the ``--params`` file says, if this process is ``python -m stages.<name>``
    (``argv[0]`` is ``-m`` while the package is imported); a bad value is left to the config check."""
    if not argv or argv[0] != "-m" or "--params" not in argv[:-1]:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(argv[argv.index("--params") + 1]).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}  # the stage reports the unreadable file itself
    runtime = data.get("runtime") if isinstance(data, dict) else None
    if not isinstance(runtime, dict) or runtime.get("cpu_kernels") not in MODES:
        return {}
    threads = runtime.get("threads")
    return pin(runtime["cpu_kernels"], threads if isinstance(threads, int) and threads > 0 else None)
