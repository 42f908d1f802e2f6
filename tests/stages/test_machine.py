"""The report names the machine its numbers come from."""

import os

import torch

from stages.machine import machine


def test_machine_names_the_cpu_model_cores_torch_and_kernel_setting(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n")
    assert machine("pinned", cpuinfo) == f"AMD EPYC 7B13, {os.cpu_count()} cores, torch {torch.__version__}, " \
                                         "cpu_kernels pinned"


def test_machine_without_cpuinfo_falls_back_to_the_platform(tmp_path):
    text = machine("native", tmp_path / "missing")
    assert text.endswith(f"{os.cpu_count()} cores, torch {torch.__version__}, cpu_kernels native")
    assert not text.startswith(",")  # some processor or architecture name comes first
