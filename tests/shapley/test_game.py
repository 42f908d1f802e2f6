"""The supernet-backed Shapley game: per-image values, the reference for empty groups, prefix reuse, and the
estimators on a supernet small enough to enumerate (10 players in 4 groups)."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smpq.shapley.estimate import shapley_values
from smpq.shapley.exact import exact_owen, exact_shapley
from smpq.shapley.game import supernet_game
from smpq.shapley.owen import GroupSampler
from smpq.supernet.mixing import FULL_PRECISION
from tests.supernet.conftest import Setup, TinyNet
from tests.supernet.conftest import _warm_batch_norm as warm_batch_norm

GROUPS = [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]  # (conv_a, w), (conv_a, a), (conv_b, w), (conv_b, a)


@pytest.fixture(scope="module")
def game():
    """10 players: 2 searchable layers × (3 weight + 2 activation candidates) of a confident tiny CNN."""
    torch.manual_seed(0)
    model = TinyNet()
    warm_batch_norm(model, torch.randn(8, 1, 10, 10))
    with torch.no_grad():
        model.fc.weight.mul_(40)  # sharp logits: the candidates' effects on the loss are clearly visible
    setup = Setup(model, (1, 10, 10), seed=1)
    supernet = setup.supernet(w_bits=(2, 4, 8), a_bits=(2, 8)).eval().freeze()
    images = torch.randn(32, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fp_logits = model.eval()(images)
    return supernet, images, fp_logits.argmax(dim=1), fp_logits  # the FP model's own predictions as labels


@pytest.fixture()
def reference(game):
    supernet = game[0]
    supernet.set_empty_group("reference", 8)
    yield supernet
    supernet.set_empty_group("zero")


def test_per_image_values_match_direct_evaluation(game):
    supernet, images, labels, fp_logits = game
    full = np.ones(10, dtype=bool)
    with torch.no_grad():
        log_q = torch.log_softmax(supernet(images).double(), dim=1)
    log_p = torch.log_softmax(fp_logits.double(), dim=1)
    top1 = supernet_game(supernet, images, labels, "top1")(full)
    neg_loss = supernet_game(supernet, images, labels, "neg_loss")(full)
    neg_kl = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits)(full)
    assert top1.shape == neg_loss.shape == neg_kl.shape == (32,)
    assert np.array_equal(top1, (log_q.argmax(1) == labels).double().numpy())
    assert np.allclose(neg_loss, log_q[torch.arange(32), labels].numpy(), atol=1e-12)
    assert np.allclose(neg_kl, -(log_p.exp() * (log_p - log_q)).sum(1).numpy(), atol=1e-12)
    assert np.all(neg_kl <= 1e-12)  # a KL divergence is never negative
    assert supernet.coalition_mask is None  # the game leaves no mask behind


def test_bad_inputs(game):
    supernet, images, labels, _ = game
    with pytest.raises(ValueError, match="unknown game value 'top5'; allowed: neg_kl, neg_loss, top1"):
        supernet_game(supernet, images, labels, "top5")
    with pytest.raises(ValueError, match="matching, non-empty images and labels"):
        supernet_game(supernet, images, labels[:3])
    with pytest.raises(ValueError, match="neg_kl needs the full-precision logits"):
        supernet_game(supernet, images, labels, "neg_kl")
    with pytest.raises(ValueError, match="reference_bits 3 is not a weight candidate"):
        supernet.set_empty_group("reference", 3)


@pytest.mark.parametrize("group", range(4))
def test_prefix_reuse_gives_the_values_of_separate_evaluations_bit_for_bit(game, reference, group):
    supernet, images, labels, fp_logits = game
    value = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits, batch_size=12)
    base = np.random.default_rng(group).random(10) < 0.5
    masks = []
    for code in range(1 << len(GROUPS[group])):
        mask = base.copy()
        mask[GROUPS[group]] = [(code >> i) & 1 for i in range(len(GROUPS[group]))]
        masks.append(mask)
    together = value.many(masks)
    assert all(np.array_equal(a, value(m)) for a, m in zip(together, masks))


def test_prefix_before_the_changed_layer_runs_once_per_batch(game, reference, monkeypatch):
    supernet, images, labels, fp_logits = game
    calls = {}
    for name, layer in supernet.mixed_layers.items():  # count the convolutions each layer computes
        def counted(x, weight, op=layer._op, name=name):
            calls[name] = calls.get(name, 0) + 1
            return op(x, weight)
        monkeypatch.setattr(layer, "_op", counted)
    masks = [np.ones(10, dtype=bool) for _ in range(4)]
    for mask, drop in zip(masks, [[], [5], [6], [5, 6]]):
        mask[drop] = False  # only conv_b's weight group differs
    supernet_game(supernet, images, labels, "top1", batch_size=16).many(masks)
    assert calls == {"conv_a": 2, "conv_b": 8}  # 2 batches: conv_a once per batch, conv_b once per coalition


@pytest.mark.parametrize("per_forward", [2, 3, 8, None])
def test_batched_coalitions_equal_one_by_one_evaluation_in_fewer_forwards(game, reference, per_forward):
    supernet, images, labels, fp_logits = game
    one_by_one = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits, batch_size=16)
    batched = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits, batch_size=16,
                            coalitions_per_forward=per_forward)
    masks = []
    for code in range(8):  # conv_b's weight group: 8 coalitions
        mask = np.ones(10, dtype=bool)
        mask[GROUPS[2]] = [(code >> i) & 1 for i in range(3)]
        masks.append(mask)
    seen = []
    hook = supernet.model.fc.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    try:
        got = batched.many(masks)
    finally:
        hook.remove()
    want = one_by_one.many(masks)
    assert all(np.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(got, want))
    per = per_forward or 1  # auto is 1 on the CPU: then the values are the one-by-one values bit for bit
    chunks = [min(per, 7 - start) for start in range(0, 7, per)]
    assert seen == ([16] + [16 * c for c in chunks]) * 2  # per batch: the record, then the batched replays
    if per == 1:
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert supernet.coalition_mask is None
    with pytest.raises(ValueError, match=r"coalitions_per_forward must be at least 1 \(or None: auto\), got 0"):
        supernet_game(supernet, images, labels, "top1", coalitions_per_forward=0)


def test_an_empty_group_uses_the_reference_quantizer_or_the_float_tensor(game, reference):
    supernet, images, labels, fp_logits = game
    value = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits)
    empty, only_8 = np.ones(10, dtype=bool), np.ones(10, dtype=bool)
    empty[[0, 1, 2]] = False
    only_8[[0, 1]] = False  # the reference is the 8-bit weight candidate alone
    assert np.array_equal(value(empty), value(only_8))
    assert np.all(np.isfinite(value(np.zeros(10, dtype=bool))))
    supernet.set_empty_group("reference", None)
    layer = next(iter(supernet.mixed_layers.values()))
    with supernet.coalition(empty):
        assert layer.active_w == FULL_PRECISION
        x = torch.randn(2, layer.in_channels, 6, 6)
        with torch.no_grad():
            float_weight = F.conv2d(layer.mixed_input(x), layer.weight, layer.bias, layer.stride, layer.padding)
            assert torch.equal(layer(x), float_weight)


def test_zero_empty_group_is_the_shapley_nas_game(game):
    supernet, images, labels, _ = game
    value = supernet_game(supernet, images, labels, "neg_loss")
    assert value(np.zeros(10, dtype=bool)).mean() < value(np.ones(10, dtype=bool)).mean()


def test_owen_over_every_ordering_equals_the_enumerated_owen_value_on_the_supernet(game, reference):
    supernet, images, labels, fp_logits = game
    value = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits)
    sampler = GroupSampler(value, 10, GROUPS, seed=0, antithetic=False, estimator="owen")
    rows = [sampler.row(sampler.contexts(order)).mean(axis=1) for order in itertools.permutations(range(4))]
    assert np.max(np.abs(np.mean(rows, axis=0) - exact_owen(value, 10, GROUPS))) < 1e-9


def test_exact_estimator_equals_enumeration_and_monte_carlo_is_within_its_errors(game, reference):
    supernet, images, labels, fp_logits = game
    value = supernet_game(supernet, images, labels, "neg_kl", fp_logits=fp_logits)
    exact = exact_shapley(value, 10)
    assert exact.sum() == pytest.approx(value(np.ones(10, bool)).mean() - value(np.zeros(10, bool)).mean(), abs=1e-9)
    enumerated = shapley_values(value, 10, seed=0, max_permutations=2, estimator="exact").values
    assert np.max(np.abs(enumerated - exact)) < 1e-9
    result = shapley_values(value, 10, seed=0, max_permutations=100, estimator="permutation")
    error = np.abs(result.values - exact)
    assert np.all(error <= 3 * result.stderr + 1e-9), (error, result.stderr)
    assert error.max() < 0.25 * np.abs(exact).max()  # and the estimate is actually informative


def test_bn_recalibration_evaluates_each_coalition_with_its_own_statistics(game, reference):
    """Each mask's value equals a manual AdaBN of that coalition; the mixture's statistics come back after."""
    supernet, images, labels, fp_logits = game
    recal = [torch.randn(16, 1, 10, 10, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    value = supernet_game(supernet, images, labels, "neg_loss", batch_size=12, recalibration=recal)
    masks = [np.ones(10, dtype=bool), np.array([1, 0, 0, 1, 1, 0, 1, 0, 1, 1], dtype=bool)]
    bns = [m for m in supernet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    mixture = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
    got = value.many(masks)
    assert all(torch.equal(m.state_dict()[k], v) for m, s in zip(bns, mixture) for k, v in s.items())
    for mask, values in zip(masks, got):
        with torch.no_grad(), supernet.coalition(mask):
            for m in bns:
                m.reset_running_stats(), setattr(m, "momentum", None), m.train()
            for batch in recal:
                supernet(batch)
            for m in bns:
                m.eval()
            expected = -F.cross_entropy(supernet(images).double(), labels, reduction="none")
        for m, s in zip(bns, mixture):  # undo the manual recalibration
            m.load_state_dict(s), setattr(m, "momentum", 0.1)
        np.testing.assert_allclose(values, expected.numpy(), rtol=1e-6, atol=1e-9)
    plain = supernet_game(supernet, images, labels, "neg_loss")(masks[1])
    assert not np.allclose(plain, got[1])  # the statistics matter for this coalition
