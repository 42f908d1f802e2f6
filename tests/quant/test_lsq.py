"""LSQQuantizer against float references and the LSQ formulas (Esser et al., ICLR 2020)."""

from __future__ import annotations

import math

import pytest
import torch

from smpq.quant import LSQQuantizer, mse_optimal_step, quant_range, set_weight_step_grad


@pytest.mark.parametrize("bits,signed,expected", [(2, True, (-2, 1)), (8, True, (-128, 127)),
                                                  (1, False, (0, 1)), (4, False, (0, 15))])
def test_quant_range(bits: int, signed: bool, expected: tuple[int, int]) -> None:
    assert quant_range(bits, signed) == expected


@pytest.mark.parametrize("bits,signed", [(1, True), (0, False), (17, False), (True, False), (2.0, True)])
def test_bad_bits_name_allowed_range(bits: object, signed: bool) -> None:
    low = 2 if signed else 1
    with pytest.raises(ValueError, match=rf"\[{low}, 16\]"):
        LSQQuantizer(bits, signed)  # type: ignore[arg-type]


def test_8bit_per_channel_error_within_half_step() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3) * torch.linspace(0.1, 3.0, 6).view(6, 1, 1, 1)
    quant = LSQQuantizer(8, signed=True, channels=6)
    quant.init_step(w)
    step = quant.step.detach().view(6, 1, 1, 1)
    inside = (w >= quant.qmin * step) & (w <= quant.qmax * step)
    assert inside.float().mean() > 0.9
    err = (quant(w).detach() - w).abs()
    assert torch.all(err[inside] <= (step / 2).expand_as(w)[inside] * (1 + 1e-5))


@pytest.mark.parametrize("bits,signed", [(2, True), (3, True), (8, True), (1, False), (2, False), (4, False)])
def test_outputs_are_integer_multiples_of_step_on_grid(bits: int, signed: bool) -> None:
    torch.manual_seed(bits)
    x = torch.randn(2000) * 3
    quant = LSQQuantizer(bits, signed)
    quant.init_step(x)
    levels = quant(x).detach() / quant.step.detach()
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.round().min() >= quant.qmin and levels.round().max() <= quant.qmax
    assert levels.round().max() == quant.qmax  # the MSE-optimal range clips the top of the data
    if not signed:
        assert levels.round().min() == 0  # negative inputs clamp to zero on an unsigned grid


def test_values_beyond_range_clamp() -> None:
    quant = LSQQuantizer(3, signed=True)
    quant.set_step(torch.tensor(0.5))
    out = quant(torch.tensor([-100.0, -2.0, -1.3, 1.2, 1.75, 100.0]))
    assert out.tolist() == [-2.0, -2.0, -1.5, 1.0, 1.5, 1.5]  # grid [-4, 3] · 0.5 = [-2.0, 1.5]


def test_ste_gradient_wrt_x() -> None:
    quant = LSQQuantizer(2, signed=True)
    quant.set_step(torch.tensor(0.5))  # range [-1.0, 0.5]
    x = torch.tensor([-3.0, -0.9, -0.2, 0.1, 0.4, 0.8, 5.0], requires_grad=True)
    quant(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_step_gradient_matches_lsq_formula() -> None:
    # 2-bit signed, s = 0.5: x/s = [0.6, -1.4, 5.0, -6.0] -> dL/ds terms (LSQ eq. 3):
    # round(v) - v inside = 0.4, 0.4; Q_max = 1 above; Q_min = -2 below; sum = -0.2, times g.
    quant = LSQQuantizer(2, signed=True)
    quant.set_step(torch.tensor(0.5))
    quant(torch.tensor([0.3, -0.7, 2.5, -3.0])).sum().backward()
    g = 1 / math.sqrt(4 * 1)
    assert quant.step.grad.item() == pytest.approx(-0.2 * g, abs=1e-6)


def test_per_channel_step_gradient_and_grad_scale() -> None:
    # channel 0: x/s = [0.6, 3.0] -> 0.4 + Q_max(=1); channel 1: x/s = [-0.25, -9] -> 0.25 + Q_min(=-2)
    quant = LSQQuantizer(2, signed=True, channels=2)
    quant.set_step(torch.tensor([0.5, 2.0]))
    x = torch.tensor([[0.3, 1.5], [-0.5, -18.0]])
    quant(x).sum().backward()
    g = 1 / math.sqrt(2 * 1)  # N = 2 elements per channel, Q_max = 1
    assert quant.step.grad.tolist() == pytest.approx([1.4 * g, -1.75 * g], abs=1e-6)


def test_step_stays_positive() -> None:
    quant = LSQQuantizer(4, signed=False)
    with torch.no_grad():
        quant.step.fill_(-1.0)
    out = quant(torch.tensor([0.5, 1.0]))
    assert torch.isfinite(out).all() and (out >= 0).all()


def _mse(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool) -> float:
    quant = LSQQuantizer(bits, signed)
    quant.set_step(step)
    return float((quant(x).detach() - x).pow(2).mean())


def test_init_step_beats_max_scaling_at_2_bits() -> None:
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    quant = LSQQuantizer(2, signed=True)
    quant.init_step(x)
    mse_init = _mse(x, quant.step.detach(), 2, True)
    max_abs = x.abs().max()
    for max_step in (max_abs / 1, max_abs / 2):  # max|x| on Q_max, or on |Q_min|
        assert mse_init < 0.5 * _mse(x, max_step, 2, True)
    fine_scan = min(_mse(x, s, 2, True) for s in torch.linspace(0.3, 1.5, 121))
    assert mse_init <= fine_scan * 1.01  # within 1% of a fine 1-D scan of the step


def test_init_step_8bit_near_lossless_and_per_channel() -> None:
    base = torch.randn(1, 500, generator=torch.Generator().manual_seed(0))
    w = base * torch.tensor([[0.01], [0.1], [1.0], [10.0]])  # same shape of data, four scales
    step = mse_optimal_step(w, 8, signed=True, per_channel=True)
    assert step.shape == (4,)
    assert torch.allclose(step / step[0], torch.tensor([1.0, 10.0, 100.0, 1000.0]), rtol=1e-3)
    quant = LSQQuantizer(8, signed=True, channels=4)
    quant.init_step(w)
    rel = (quant(w).detach() - w).pow(2).mean(dim=1) / w.pow(2).mean(dim=1)
    assert (rel < 1e-4).all()


def test_channel_mismatch_and_extra_repr() -> None:
    quant = LSQQuantizer(4, signed=True, channels=3)
    with pytest.raises(ValueError, match="3 channels"):
        quant(torch.randn(2, 5))
    assert repr(quant) == "LSQQuantizer(bits=4, signed=True, grid=[-8, 7], per-channel(3))"
    assert LSQQuantizer(8, signed=False).step.shape == ()


def test_a_step_carried_past_zero_keeps_quantizing_and_learning() -> None:
    """An SGD update can push a small step below zero (mobilenet_v2's classifier rows, RESULTS §0j): the channel
    then quantizes with |step| and its step still gets a gradient, instead of collapsing to zero for good."""
    torch.manual_seed(0)
    w = torch.randn(2, 16)
    q = LSQQuantizer(8, signed=True, channels=2)
    q.set_step(torch.tensor([0.01, -0.01]))
    out = q(w)
    reference = LSQQuantizer(8, signed=True, channels=2)
    reference.set_step(torch.tensor([0.01, 0.01]))
    assert torch.equal(out, reference(w))  # the row keeps its values (a clamp gave |ŵ| ≤ 128e-8)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (reference(w) * upstream).sum().backward()
    assert reference.step.grad[1] != 0 and q.step.grad[0] == reference.step.grad[0]
    assert q.step.grad[1] == -reference.step.grad[1]  # d|s|/ds = −1: the update moves |s| as it would move s
    # (the clamp alone gave exactly 0 here, so no update could ever bring the step back)


def test_tensor_weight_step_grad_scales_per_channel_step_gradients_by_one_over_sqrt_channels() -> None:
    """``set_weight_step_grad(model, "tensor")``: N of g counts all C·K weights, not the K of one channel, so each
    per-channel step gradient is 1/sqrt(C) of the ``channel`` one; the forward values stay those of the step."""
    torch.manual_seed(0)
    w = torch.randn(4, 9)
    grads, outputs = {}, {}
    for mode in ("channel", "tensor"):
        model = torch.nn.ModuleDict({"w": LSQQuantizer(8, signed=True, channels=4), "a": LSQQuantizer(4, False)})
        model["w"].init_step(w)
        model["a"].set_step(torch.tensor(0.1))
        assert set_weight_step_grad(model, mode) is model
        outputs[mode] = model["w"](w)
        (outputs[mode].sum() + model["a"](w.abs()).sum()).backward()
        grads[mode] = model["w"].step.grad.clone(), model["a"].step.grad.clone()
    assert torch.allclose(outputs["tensor"], outputs["channel"], rtol=0, atol=1e-6)
    assert torch.allclose(grads["tensor"][0], grads["channel"][0] / 2, rtol=1e-5)  # C = 4: 1/sqrt(4)
    assert torch.equal(grads["tensor"][1], grads["channel"][1])  # a per-tensor (activation) step is unchanged
    with pytest.raises(ValueError, match="^weight step gradient scale must be 'channel' or 'tensor', got 'layer'$"):
        set_weight_step_grad(model, "layer")
    assert model["w"].tensor_grad_scale  # a bad mode changes nothing
