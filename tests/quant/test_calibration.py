"""calibrate() on a tiny conv-relu-conv-pool-linear model, and the Calibration artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smpq.errors import ArtifactError
from smpq.policy import LayerBits
from smpq.quant import Calibration, calibrate, mse_optimal_step
from smpq.quant.activation_sampler import ActivationSampler

LAYERS = ["conv1", "conv2", "fc"]


def _calibrate(model, batches, **kwargs) -> Calibration:
    return calibrate(model, kwargs.pop("layers", LAYERS), batches, w_bits=[2, 4], a_bits=[2, 4, 8], **kwargs)


def test_signedness_and_every_candidate(tiny_net, batches) -> None:
    calib = _calibrate(tiny_net, batches)
    assert calib.a_signed("conv1") is True  # raw Gaussian input
    assert calib.a_signed("conv2") is False and calib.a_signed("fc") is False  # after ReLU
    for name, module in tiny_net.named_children():
        if name in LAYERS:
            assert calib.bits(name, "w") == [2, 4] and calib.bits(name, "a") == [2, 4, 8]
            assert calib.step(name, "w", 2).shape == (module.out_features if name == "fc" else module.out_channels,)
            assert calib.step(name, "a", 8).shape == ()
    steps = [calib.step("conv2", "a", b).item() for b in (2, 4, 8)]
    assert all(s > 0 for s in steps) and steps[0] > steps[1] > steps[2]  # more bits, finer steps


def test_weight_steps_equal_mse_init_of_weights(tiny_net, batches) -> None:
    calib = _calibrate(tiny_net, batches)
    expected = mse_optimal_step(tiny_net.conv2.weight, 4, signed=True, per_channel=True)
    assert torch.allclose(calib.step("conv2", "w", 4), expected)


def test_model_mode_restored_and_hooks_removed(tiny_net, batches) -> None:
    tiny_net.train()
    _calibrate(tiny_net, batches)
    assert tiny_net.training
    assert all(not m._forward_pre_hooks for m in tiny_net.modules())


def test_extra_fixed_bits(tiny_net, batches) -> None:
    extra = {"conv1": LayerBits(8, 8), "fc": LayerBits(8, 6)}
    calib = _calibrate(tiny_net, batches, layers=["conv2"], extra=extra)
    assert calib.layers == ["conv2", "conv1", "fc"]
    assert calib.bits("conv1", "w") == [8] and calib.bits("fc", "a") == [6]
    assert calib.bits("conv2", "w") == [2, 4]
    both = _calibrate(tiny_net, batches, extra={"fc": LayerBits(8, 8)})
    assert both.bits("fc", "w") == [2, 4, 8] and both.bits("fc", "a") == [2, 4, 8]


def test_missing_step_message(tiny_net, batches) -> None:
    calib = _calibrate(tiny_net, batches)
    with pytest.raises(KeyError, match=r"no 'w' step for layer 'conv2' at 3 bits.*w bits \[2, 4\], a bits \[2, 4, 8\]"):
        calib.step("conv2", "w", 3)
    with pytest.raises(KeyError, match=r"layer 'nope' is not calibrated.*conv1"):
        calib.step("nope", "a", 4)


def test_bad_layers_and_no_batches(tiny_net, batches) -> None:
    with pytest.raises(ValueError, match=r"not in the model: \['ghost'\]"):
        _calibrate(tiny_net, batches, layers=["conv1", "ghost"])
    with pytest.raises(ValueError, match=r"not Conv2d/Linear.*\['relu1'\]"):
        _calibrate(tiny_net, batches, layers=["relu1"])
    with pytest.raises(ValueError, match="no batches"):
        _calibrate(tiny_net, [])
    with pytest.raises(ValueError, match=r"layer 'fc': signed quantizer bits .*\[2, 16\], got 1"):
        calibrate(tiny_net, ["fc"], batches, w_bits=[1], a_bits=[4])


def test_round_trip_through_torch_save(tiny_net, batches, tmp_path: Path) -> None:
    calib = _calibrate(tiny_net, batches, extra={"conv1": LayerBits(8, 8)})
    path = tmp_path / "calibration.pt"
    torch.save(calib.to_state_dict(), path)
    loaded = Calibration.from_state_dict(torch.load(path, weights_only=True))
    assert loaded.signed == calib.signed and set(loaded.steps) == set(calib.steps)
    for key, step in calib.steps.items():
        assert torch.equal(loaded.steps[key], step)
    assert "conv1|w|8" in calib.to_state_dict() and "conv2|a_signed" in calib.to_state_dict()
    assert Calibration.load(calib.save(tmp_path / "c2.pt")).summary() == calib.summary()


def test_from_state_dict_rejects_unknown_key() -> None:
    with pytest.raises(ArtifactError, match="unexpected key 'conv1.weight'"):
        Calibration.from_state_dict({"conv1.weight": torch.zeros(1)})


def test_summary_is_json(tiny_net, batches) -> None:
    summary = _calibrate(tiny_net, batches).summary()
    decoded = json.loads(json.dumps(summary))
    assert decoded["conv2"]["a_signed"] is False
    assert set(decoded["fc"]["w_step_mean"]) == {"2", "4"} and set(decoded["fc"]["a_step_mean"]) == {"2", "4", "8"}


def test_calibration_is_seeded(tiny_net, batches) -> None:
    first = _calibrate(tiny_net, batches, max_activation_samples=50, seed=3)
    again = _calibrate(tiny_net, batches, max_activation_samples=50, seed=3)
    assert all(torch.equal(first.steps[k], again.steps[k]) for k in first.steps)


def test_sampler_bounded_uniform_and_tracks_global_min() -> None:
    sampler = ActivationSampler(max_samples=1000, seed=0)
    sampler.observe("x", torch.zeros(5000))  # first half of the stream: zeros
    sampler.observe("x", torch.ones(200))
    sampler.observe("x", torch.ones(4800) * 2)
    sampler.observe("x", torch.tensor([-7.0]))  # a single negative value, almost surely not kept
    kept = sampler.sample("x")
    assert kept.numel() == 1000
    assert 0.4 < (kept == 0).float().mean() < 0.6  # 5000 of 10001 values were zeros
    assert sampler.minimum("x") == -7.0
    with pytest.raises(ValueError, match="positive integer"):
        ActivationSampler(0, seed=0)
