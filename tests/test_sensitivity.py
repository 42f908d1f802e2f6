"""The ``hawq`` method: Hutchinson traces against exact Hessians, HAWQ-V3's Ω, and its knapsack selection."""

from __future__ import annotations

import logging
from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smpq.config import load_params
from smpq.cost import Budget, CostTable, LayerCost, bitops
from smpq.errors import ConfigError, SensitivityError
from smpq.policy import LayerBits, Policy
from smpq.quant import calibrate
from smpq.select import select_policy
from smpq.sensitivity.hutchinson import hutchinson, layer_traces, quadratic_forms, rademacher
from smpq.sensitivity.omega import (
    FULL_PRECISION,
    activation_errors,
    omega_scores,
    quantization_error,
    usable_traces,
    weight_errors,
)
from stages.select import hawq_scores
from tests.test_config import PROJECT_PARAMS, write


def quadratic_sampler(matrix: torch.Tensor, sizes: list[int], seed: int = 0):
    """``sample(b)`` of the loss ½ θᵀAθ (at a random θ) split into tensors of ``sizes``: its Hessian is A."""
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(matrix.shape[0], generator=torch.Generator().manual_seed(seed + 1))
    tensors = [part.clone().requires_grad_() for part in theta.split(sizes)]

    def sample(batch: int) -> np.ndarray:
        flat = torch.cat(tensors)
        return quadratic_forms(0.5 * flat @ matrix @ flat, tensors, generator)

    return sample


def random_psd(n: int, seed: int) -> torch.Tensor:
    m = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (m @ m.T).float()


def test_rademacher_probes_are_plus_minus_one_and_seeded():
    x = torch.empty(1000)
    v = rademacher(x, torch.Generator().manual_seed(3))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(v.mean())) < 0.1
    assert torch.equal(v, rademacher(x, torch.Generator().manual_seed(3)))


def test_hutchinson_matches_the_exact_trace_of_a_quadratic_within_its_standard_error():
    matrix = random_psd(6, seed=1)
    estimate = hutchinson(quadratic_sampler(matrix, [6]), ["theta"], probes=400, batches=1, tolerance=None)
    exact = float(torch.trace(matrix))
    assert estimate.stderr[0] > 0 and estimate.samples == estimate.hvps == 400
    assert abs(estimate.mean[0] - exact) <= 3 * estimate.stderr[0]
    assert estimate.stderr[0] < 0.1 * exact  # and the error bar is tight, so the check above can fail


def test_one_joint_probe_estimates_every_block_trace():
    """Cross blocks have mean zero: each tensor's vᵢᵀ(Hv)ᵢ is unbiased for its own block's trace."""
    matrix = random_psd(7, seed=2)
    estimate = hutchinson(quadratic_sampler(matrix, [3, 4]), ["a", "b"], probes=300, batches=2, tolerance=None)
    exact = [float(torch.trace(matrix[:3, :3])), float(torch.trace(matrix[3:, 3:]))]
    assert np.all(np.abs(estimate.mean - exact) <= 3 * estimate.stderr)


def test_a_diagonal_hessian_gives_the_exact_trace_with_any_probe():
    matrix = torch.diag(torch.tensor([1.0, 2.0, 3.5, 0.25]))
    estimate = hutchinson(quadratic_sampler(matrix, [4]), ["theta"], probes=2, batches=1, tolerance=None)
    assert estimate.mean[0] == pytest.approx(6.75, rel=1e-6)
    assert estimate.stderr[0] == pytest.approx(0.0, abs=1e-6)


def test_the_tolerance_stops_once_no_trace_moves():
    matrix = torch.diag(torch.tensor([1.0, 2.0]))
    estimate = hutchinson(quadratic_sampler(matrix, [2]), ["theta"], probes=10, batches=3, tolerance=1e-3)
    assert (estimate.rounds, estimate.hvps, estimate.converged) == (2, 6, True)
    noisy = hutchinson(quadratic_sampler(random_psd(6, 4), [6]), ["theta"], probes=5, batches=1, tolerance=0.0)
    assert (noisy.rounds, noisy.converged) == (5, False)


def test_a_non_finite_sample_is_an_error_naming_the_tensor():
    with pytest.raises(SensitivityError, match=r"\('conv', 'a'\) is not finite"):
        hutchinson(lambda b: np.array([1.0, np.nan]), [("conv", "w"), ("conv", "a")], probes=2, batches=1,
                   tolerance=None)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.middle, self.last = nn.Linear(4, 5), nn.Linear(5, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(self.middle(torch.tanh(self.first(x)))))


def test_layer_traces_match_the_exact_weight_and_activation_hessians():
    model, generator = Tiny(), torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 4, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    weight = model.middle.weight.detach().clone()
    hidden = torch.tanh(model.first(images)).detach()

    def loss_of_weight(w):
        return F.cross_entropy(model.last(torch.tanh(F.linear(hidden, w, model.middle.bias))), labels)

    def loss_of_input(a):
        return F.cross_entropy(model.last(torch.tanh(model.middle(a))), labels)

    exact_w = float(torch.autograd.functional.hessian(loss_of_weight, weight).reshape(15, 15).trace()) / 15
    exact_a = float(torch.autograd.functional.hessian(loss_of_input, hidden).reshape(40, 40).trace()) / 5
    found = layer_traces(model.train(), ["middle"], [(images, labels)], probes=2000, tolerance=None,
                         generator=torch.Generator().manual_seed(0))
    for key, exact in ((("middle", "w"), exact_w), (("middle", "a"), exact_a)):
        mean, stderr = found["traces"][key]
        assert abs(mean - exact) <= 3 * stderr and stderr < 0.1 * abs(exact)
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored


def calibrated_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    torch.manual_seed(0)
    batches = [torch.randn(16, 3, 10, 10) for _ in range(2)]
    calibration = calibrate(model, ["0", "2"], batches, w_bits=(2, 3, 4, 8), a_bits=(2, 3, 4, 8))
    return model, calibration, batches


def test_omega_is_zero_at_full_precision_and_decreases_with_bits():
    model, calibration, batches = calibrated_layer()
    bits = (2, 3, 4, 8, FULL_PRECISION)
    errors = weight_errors(model[2], "2", calibration, bits)
    errors |= activation_errors(model, ["2"], calibration, batches, bits)
    omega = omega_scores({("2", "w"): 0.3, ("2", "a"): 0.01}, errors)
    for kind in ("w", "a"):
        values = [omega[("2", kind, b)] for b in bits]
        assert values[-1] == 0.0
        assert all(hi > lo for hi, lo in zip(values, values[1:])), values
    assert quantization_error(torch.randn(5), torch.tensor(0.1), FULL_PRECISION, True) == 0.0


def test_a_negative_trace_is_clamped_to_zero_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        usable, clamped = usable_traces({("b1", "w"): (-0.2, 0.05), ("b1", "a"): (0.4, 0.1)})
    assert usable == {("b1", "w"): 0.0, ("b1", "a"): 0.4} and clamped == [("b1", "w")]
    assert "b1 (w) is negative" in caplog.text


W_BITS, A_BITS = (2, 4, 8), (2, 4)
FIXED = {"stem": LayerBits(8, 8), "fc": LayerBits(8, 8)}
TABLE = CostTable(layers=(LayerCost("stem", "conv", 1000, 100, 8), LayerCost("b1", "conv", 5000, 600, 16),
                          LayerCost("b2", "conv", 3000, 1200, 16), LayerCost("b3", "conv", 800, 2400, 32),
                          LayerCost("fc", "linear", 640, 640, 10)), input_shape=(1, 8, 8))
# Hand-made Ω: sensitive b3 weights, an insensitive b1, activations in between (larger at fewer bits).
OMEGA = {("b1", "w", 2): 0.30, ("b1", "w", 4): 0.05, ("b1", "w", 8): 0.001, ("b1", "a", 2): 0.20, ("b1", "a", 4): 0.03,
         ("b2", "w", 2): 0.90, ("b2", "w", 4): 0.12, ("b2", "w", 8): 0.002, ("b2", "a", 2): 0.40, ("b2", "a", 4): 0.06,
         ("b3", "w", 2): 2.50, ("b3", "w", 4): 0.40, ("b3", "w", 8): 0.010, ("b3", "a", 2): 0.15, ("b3", "a", 4): 0.02}


@pytest.mark.parametrize("avg_bits", [2.0, 2.5, 3.0, 3.5, 4.0])
def test_hawq_selection_on_hand_made_omega_matches_brute_force(avg_bits):
    from smpq.cost import budget_bitops

    budget = Budget(budget_bitops(TABLE, FIXED, avg_bits=avg_bits))
    sensitivity = {"candidates": [{"layer": k[0], "kind": k[1], "bits": k[2], "omega": v} for k, v in OMEGA.items()]}
    chosen = select_policy(hawq_scores(sensitivity), TABLE, budget, FIXED, w_bits=W_BITS, a_bits=A_BITS)
    best = min(sum(OMEGA[(n, "w", w)] + OMEGA[(n, "a", a)] for n, (w, a) in zip(TABLE.searchable, pairs))
               for pairs in product(product(W_BITS, A_BITS), repeat=3)
               if bitops(TABLE, Policy({**FIXED, **dict(zip(TABLE.searchable, pairs))})) <= budget.bitops)
    total = sum(OMEGA[(n, "w", chosen[n].w_bits)] + OMEGA[(n, "a", chosen[n].a_bits)] for n in TABLE.searchable)
    assert bitops(TABLE, chosen) <= budget.bitops
    assert total == pytest.approx(best, abs=1e-12)


def test_hawq_params_are_validated(tmp_path):
    params = load_params(PROJECT_PARAMS)
    assert params.hawq.probes >= 2 and "hawq" in params.finetune.methods
    with pytest.raises(ConfigError, match=r"hawq.probes: 1 out of range"):
        load_params(write(tmp_path, {"hawq": {"probes": 1}}))
    with pytest.raises(ConfigError, match=r"hawq.*unknown key.*probe"):
        load_params(write(tmp_path, {"hawq": {"probe": 4}}))
