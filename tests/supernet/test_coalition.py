"""Coalition masks (SPEC §3.3): survivors renormalised, empty groups zero, nothing else touched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smpq.supernet import Player


def _mask(supernet, drop=(), keep_only=None) -> np.ndarray:
    """All players kept except ``drop`` (players); with ``keep_only``, exactly those."""
    players = supernet.players()
    if keep_only is not None:
        return np.array([p in keep_only for p in players])
    return np.array([p not in drop for p in players])


def _capture(module):
    """Forward hook storing the module's input and output of the latest call."""
    seen = {}

    def hook(mod, inputs, output):
        seen["input"], seen["output"] = inputs[0].detach().clone(), output.detach().clone()

    return seen, module.register_forward_hook(hook)


def test_full_mask_is_bit_exact_also_after_set_clear_cycles(tiny) -> None:
    supernet = tiny.supernet().eval()
    reference = supernet(tiny.x).detach()
    full = np.ones(len(supernet.players()), dtype=bool)
    rng = np.random.default_rng(0)
    for _ in range(3):
        supernet.set_coalition(rng.random(len(full)) < 0.5)
        supernet(tiny.x)
        supernet.set_coalition(full)
        assert torch.equal(supernet(tiny.x), reference)
        supernet.set_coalition(None)
        assert torch.equal(supernet(tiny.x), reference)
    supernet.freeze()
    with supernet.coalition(full):
        assert torch.equal(supernet(tiny.x), reference)


def test_masked_candidate_changes_output(tiny) -> None:
    supernet = tiny.supernet().eval()
    reference = supernet(tiny.x).detach()
    with supernet.coalition(_mask(supernet, drop=[Player("conv_b", "a", 2)])):
        assert not torch.allclose(supernet(tiny.x), reference)


def test_renormalised_mixture_matches_hand_computation(tiny) -> None:
    supernet = tiny.supernet().eval()
    layer = supernet.mixed_layers["conv_a"]
    seen, handle = _capture(layer)
    dropped = [Player("conv_a", "w", 3), Player("conv_a", "a", 8), Player("conv_a", "a", 2)]
    with torch.no_grad(), supernet.coalition(_mask(supernet, drop=dropped)):
        supernet(tiny.x)
    handle.remove()
    x = seen["input"]
    with torch.no_grad():
        p_w = torch.softmax(layer.alpha_w, 0)[[0, 2, 3]]
        p_a = torch.softmax(layer.alpha_a, 0)[[1, 2]]
        p_w, p_a = p_w / p_w.sum(), p_a / p_a.sum()
        weight = sum(p * layer.w_quants[f"b{b}"](layer.weight) for p, b in zip(p_w, (2, 4, 8)))
        x_mix = sum(p * layer.a_quants[f"b{b}"](x) for p, b in zip(p_a, (3, 4)))
        expected = F.conv2d(x_mix, weight, layer.bias, padding=1)
    assert torch.allclose(seen["output"], expected, rtol=1e-5, atol=1e-5)


def test_empty_weight_group_leaves_only_the_bias(tiny) -> None:
    supernet = tiny.supernet().eval()
    layer = supernet.mixed_layers["conv_a"]
    seen, handle = _capture(layer)
    with torch.no_grad():
        supernet(tiny.x)
        reference_input = seen["input"]
        drop = [Player("conv_a", "w", b) for b in (2, 3, 4, 8)]
        with supernet.coalition(_mask(supernet, drop=drop)):
            supernet(tiny.x)
            assert torch.equal(layer.mixed_weight(), torch.zeros_like(layer.weight))
            assert layer.mixed_input(seen["input"]).abs().sum() > 0  # only the weight tensor is zero
    handle.remove()
    assert torch.equal(seen["input"], reference_input)  # layers before are untouched
    bias_only = layer.bias.detach().view(1, -1, 1, 1).expand_as(seen["output"])
    assert torch.equal(seen["output"], bias_only)


@pytest.mark.parametrize("frozen", [False, True])
def test_empty_activation_group_feeds_zeros(tiny, frozen: bool) -> None:
    supernet = tiny.supernet().eval()
    if frozen:
        supernet.freeze()
    layer = supernet.mixed_layers["conv_b"]
    seen, handle = _capture(layer)
    with torch.no_grad(), supernet.coalition(_mask(supernet, drop=[Player("conv_b", "a", b) for b in (2, 3, 4, 8)])):
        logits = supernet(tiny.x)
        assert torch.equal(layer.mixed_input(seen["input"]), torch.zeros_like(seen["input"]))
        assert layer.mixed_weight().abs().sum() > 0
    handle.remove()
    assert seen["input"].abs().sum() > 0 and torch.equal(seen["output"], torch.zeros_like(seen["output"]))
    with torch.no_grad(), supernet.coalition(_mask(supernet, drop=[Player("conv_b", "a", b) for b in (2, 3, 4, 8)])):
        assert torch.equal(supernet(torch.randn_like(tiny.x)), logits)  # nothing of the input gets through


def test_masked_evaluations_leave_alpha_weights_and_buffers_unchanged(tiny) -> None:
    supernet = tiny.supernet().eval()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    rng = np.random.default_rng(1)
    for frozen in (False, True):
        if frozen:
            supernet.freeze()
        for _ in range(4):
            with supernet.coalition(rng.random(len(supernet.players())) < 0.5):
                supernet(tiny.x)
    after = supernet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradients_reach_alpha_and_weights_in_training_forward(tiny) -> None:
    supernet = tiny.supernet().train()
    loss = F.cross_entropy(supernet(tiny.x), torch.arange(8) % 3)
    loss.backward()
    for name, layer in supernet.mixed_layers.items():
        for param in (layer.alpha_w, layer.alpha_a, layer.weight, *(q.step for q in layer.w_quants.values()),
                      *(q.step for q in layer.a_quants.values())):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert supernet.model.stem.weight.grad.abs().sum() > 0


def test_players_order_and_stability_across_state_dict_roundtrip(tiny) -> None:
    first = tiny.supernet(w_bits=(8, 2, 4, 3), a_bits=(4, 2))
    expected = [Player(layer, kind, b) for layer in ("conv_a", "conv_b")
                for kind, bits in (("w", (2, 3, 4, 8)), ("a", (2, 4))) for b in bits]
    assert first.players() == expected
    state = first.state_dict()
    fresh = tiny.supernet(w_bits=(2, 3, 4, 8), a_bits=(2, 4), random_alpha=False)
    fresh.load_state_dict(state)
    assert fresh.players() == first.players()
    mask = np.arange(len(expected)) % 3 != 0
    first.eval(), fresh.eval()
    with torch.no_grad(), first.coalition(mask), fresh.coalition(mask):
        assert torch.equal(first(tiny.x), fresh(tiny.x))


def test_coalition_context_restores_previous_mask(tiny) -> None:
    supernet = tiny.supernet().eval()
    outer = np.arange(len(supernet.players())) % 2 == 0
    with supernet.coalition(outer):
        with supernet.coalition(~outer):
            assert np.array_equal(supernet.coalition_mask, ~outer)
        assert np.array_equal(supernet.coalition_mask, outer)
    assert supernet.coalition_mask is None


@pytest.mark.parametrize("bad", [np.ones(5, dtype=bool), torch.ones(17, dtype=torch.bool), np.ones(16, dtype=int),
                                 np.ones(16), torch.ones(16), np.ones((2, 8), dtype=bool), "all", 3])
def test_bad_masks_are_rejected(tiny, bad) -> None:
    supernet = tiny.supernet()
    assert len(supernet.players()) == 16
    with pytest.raises(ValueError, match="mask"):
        supernet.set_coalition(bad)
    assert supernet.coalition_mask is None
