"""Device selection (issue 17): ``runtime.device`` resolves to a torch device or fails with one clear line,
the model and batches move through the same code on any device, and reduced precision leaves quantizers fp32."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smpq.config import load_params
from smpq.device import Execution, cpu_state, fit_count, resolve_device, split_fits
from smpq.errors import ConfigError
from smpq.quant import LSQQuantizer
from smpq.quant.layers import QuantConv2d
from smpq.train import train
from stages.launch import place
from tests.stages.test_bad_inputs import ROOT, assert_fails_cleanly, project  # noqa: F401


def test_auto_falls_back_to_the_cpu_without_cuda():
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device("cpu", cuda_available=True) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True, cuda_count=2, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_clear_line(name):
    with pytest.raises(ConfigError) as err:
        resolve_device(name, cuda_available=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"runtime.device: {name} requested")
    assert "set runtime.device: cpu or auto" in message


def test_a_gpu_the_machine_lacks_is_named():
    with pytest.raises(ConfigError, match="needs GPU 3 but this machine has 2"):
        resolve_device("cuda:3", cuda_available=True, cuda_count=2)


def test_device_and_precision_values_are_checked():
    with pytest.raises(ConfigError, match="runtime.device: 'gpu' is not a device"):
        load_params(ROOT / "params.yaml", {"runtime.device": "gpu"})
    with pytest.raises(ConfigError, match="runtime.precision"):
        load_params(ROOT / "params.yaml", {"runtime.precision": "fp8"})
    assert load_params(ROOT / "params.yaml", {"runtime.device": "cuda:2"}).runtime.device == "cuda:2"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_stage_asked_for_cuda_on_a_cpu_machine_fails_cleanly(project):  # noqa: F811
    project.write_params(runtime={"device": "cuda"})
    assert_fails_cleanly(project, "pretrain", "runtime.device: cuda requested but this machine has no usable CUDA")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_a_model_moves_through_placement_on_the_meta_device():
    """The placement and forward of a real run, on the shape-only ``meta`` device (stands in for a GPU)."""
    execution = Execution(device=torch.device("meta"))
    model = place(tiny_model(), execution)
    assert {p.device.type for p in [*model.parameters(), *model.buffers()]} == {"meta"}
    logits = model(execution.to_device(torch.zeros(2, 1, 6, 6)))
    assert logits.device.type == "meta" and logits.shape == (2, 3)


def test_an_explicit_cpu_execution_trains_bit_for_bit_like_the_default():
    from smpq.config import TrainConfig

    batches = [(torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(i)), torch.arange(8) % 3)
               for i in range(3)]
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, schedule="constant")
    default, explicit = tiny_model(), place(tiny_model(), Execution(device=torch.device("cpu")))
    train(default, batches, cfg, progress=False)
    train(explicit, batches, cfg, progress=False, execution=Execution(device=torch.device("cpu")))
    for key, value in default.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), key


def test_the_memory_rule_for_splits():
    cuda = torch.device("cuda", 0)
    assert split_fits(100, cuda, free_bytes=400) and not split_fits(101, cuda, free_bytes=400)
    assert split_fits(10**15, torch.device("cpu"))


def test_the_memory_rule_for_batched_coalitions():
    assert fit_count(10**9, torch.device("cpu")) == 1  # nothing to gain on the CPU
    assert fit_count(100, torch.device("cuda", 0), free_bytes=1000) == 5  # half of the free memory
    assert fit_count(10**6, torch.device("cuda", 0), free_bytes=1000) == 1  # at least one


def test_quantizers_stay_fp32_under_bf16_autocast():
    quantizer = LSQQuantizer(4, signed=True)
    quantizer.set_step(torch.tensor(0.1))
    x = torch.randn(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = quantizer(x.bfloat16())
    assert inside.dtype == torch.float32
    assert torch.equal(inside, quantizer(x.bfloat16().float()))
    conv = QuantConv2d.from_float(nn.Conv2d(1, 2, 3), 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 1, 5, 5)).dtype == torch.bfloat16  # the convolution itself runs in bf16


def test_bf16_training_runs_and_keeps_fp32_master_weights():
    from smpq.config import TrainConfig

    model = tiny_model()
    batches = [(torch.randn(8, 1, 6, 6), torch.arange(8) % 3)]
    history = train(model, batches, TrainConfig(epochs=1, batch_size=8, schedule="constant"), progress=False,
                    execution=Execution(precision="bf16"))
    assert math.isfinite(history[0]["train_loss"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_cpu_checkpoints_keep_the_state_dict_object():
    state = tiny_model().state_dict()
    assert cpu_state(state) is state
