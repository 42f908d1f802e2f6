"""Benchmark: does ``runtime.cpu_kernels: pinned`` make a stage's output independent of the CPU's kernels?

Why: the same commit gave different floats on an AMD and an Intel machine (ATen, oneDNN and MKL choose
kernels per CPU). Two CPUs are simulated on this one by the variables those libraries obey
(``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``): the ``pretrain`` stage (the first float-producing stage)
runs as ``python -m stages.pretrain`` in a scratch copy of a project whose ``data/prepared`` exists, once
per (mode, simulated CPU), and the saved weights are compared bit for bit. Native mode is expected to
differ between the two CPUs, pinned mode to give identical bits (the stage entry point overrides the
kernel choice before torch loads: stages/kernels.py); the wall times show what pinning costs.

    python -m bench.kernel_pinning PROJECT [--epochs 1 --samples 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

CPUS = {  # what two different x86 machines would pick, as the libraries' own variables
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def run_pretrain(project: Path, out: Path, mode: str, cpu: str, epochs: int, samples: int) -> float:
    """``python -m stages.pretrain`` with ``runtime.cpu_kernels: mode`` under simulated CPU ``cpu``; seconds."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"] = {**params.get("runtime", {}), "cpu_kernels": mode, "threads": None}  # device etc. kept
    params["pretrain"].update(epochs=epochs, samples_per_epoch=samples)
    params["tracking"]["enabled"] = False
    params_file = out / f"params-{mode}-{cpu}.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**{k: v for k, v in os.environ.items() if k not in CPUS["avx2"]}, **CPUS[cpu]}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.pretrain", "--params", str(params_file), "--prepared",
                    str(project / "data/prepared"), "--out", str(out / mode / cpu), "--results",
                    str(out / mode / cpu / "results")], cwd=Path(__file__).resolve().parents[1], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def compare(a: Path, b: Path) -> tuple[bool, float]:
    """(bit-identical, largest absolute difference) of two saved state_dicts."""
    sa, sb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    diffs = [float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point()]
    same = all(torch.equal(sa[k], sb[k]) for k in sa)
    return same, max(diffs, default=0.0)


def measure(project: Path, epochs: int = 1, samples: int = 1024) -> dict:
    with tempfile.TemporaryDirectory(prefix="kernel-pinning-") as tmp:
        out = Path(tmp)
        seconds = {f"{mode}/{cpu}": run_pretrain(project, out, mode, cpu, epochs, samples)
                   for mode in ("native", "pinned") for cpu in CPUS}
        result = {}
        for mode in ("native", "pinned"):
            same, diff = compare(out / mode / "avx2", out / mode / "sse41")
            result[mode] = {"bit_identical": same, "max_abs_diff": diff,
                            "seconds": {cpu: seconds[f"{mode}/{cpu}"] for cpu in CPUS}}
        fp = yaml.safe_load((out / "native/avx2/results/metrics.json").read_text())
        result["native_vs_pinned_identical"] = compare(out / "native/avx2", out / "pinned/avx2")[0]
        result["fp_top1_native_avx2"] = fp["fp"]["top1"]
        shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="a project folder with data/prepared (e.g. a tiny copy)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1024, help="pretrain.samples_per_epoch")
    args = parser.parse_args()
    result = measure(args.project.resolve(), args.epochs, args.samples)
    for mode in ("native", "pinned"):
        r = result[mode]
        print(f"{mode:6s}: avx2 vs sse41 bit-identical={r['bit_identical']}, max |diff| {r['max_abs_diff']:.3g}, "
              + ", ".join(f"{cpu} {s:.1f} s" for cpu, s in r["seconds"].items()))
    print(f"pinned equals native avx2: {result['native_vs_pinned_identical']}")


if __name__ == "__main__":
    main()
