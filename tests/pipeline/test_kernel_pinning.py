"""``runtime.cpu_kernels: pinned``: the stage output no longer depends on the kernels the CPU would pick."""

import pytest

from bench.kernel_pinning import measure
from stages.kernels import PINNED_ENV, pin, pin_from_argv


def test_pin_sets_the_libraries_variables_only_for_a_stage_entry_point(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("runtime:\n  cpu_kernels: pinned\n  threads: 2\n")
    env = {"ATEN_CPU_CAPABILITY": "avx512"}
    assert pin("pinned", 2, env) == {**PINNED_ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert env["ATEN_CPU_CAPABILITY"] == "default"  # pinned overrides the machine's choice
    assert pin("native", None, {}) == {}
    assert pin_from_argv(["pytest", "--params", str(params)]) == {}  # not `python -m stages.<name>`
    params.write_text("runtime:\n  cpu_kernels: native\n")
    assert pin_from_argv(["-m", "--params", str(params)]) == {}


@pytest.mark.slow  # four 1-epoch pretrain runs of the tiny project: ~2-3 min
def test_pinned_kernels_give_identical_weights_where_native_kernels_differ(reproduced):
    result = measure(reproduced, epochs=1, samples=1024)
    assert result["pinned"]["bit_identical"], result
    assert not result["native"]["bit_identical"], result  # the simulated CPUs really pick other kernels
