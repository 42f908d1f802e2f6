"""The supernet-backed Shapley game: values, validation, and MC estimates against enumeration."""

import numpy as np
import pytest
import torch

from smpq.coalition_game import supernet_game
from smpq.shapley import exact_shapley, shapley_values
from tests.supernet.conftest import Setup, TinyNet, _warm_batch_norm as warm_batch_norm


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
        labels = model.eval()(images).argmax(dim=1)  # the FP model's own predictions as labels
    return supernet, images, labels


def test_values_match_direct_evaluation(game):
    supernet, images, labels = game
    n = len(supernet.players())
    assert n == 10
    full = np.ones(n, dtype=bool)
    top1, neg_loss = supernet_game(supernet, images, labels), supernet_game(supernet, images, labels, "neg_loss")
    with torch.no_grad():
        logits = supernet(images)
    assert top1(full) == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert neg_loss(full) == pytest.approx(-float(torch.nn.functional.cross_entropy(logits, labels)), abs=1e-6)
    empty = np.zeros(n, dtype=bool)
    assert neg_loss(empty) < neg_loss(full)  # every tensor zero: logits are the last layer's bias only
    assert supernet.coalition_mask is None  # the game leaves no mask behind


def test_bad_inputs(game):
    supernet, images, labels = game
    with pytest.raises(ValueError, match="unknown game value 'top5'; allowed: top1, neg_loss"):
        supernet_game(supernet, images, labels, "top5")
    with pytest.raises(ValueError, match="matching, non-empty images and labels"):
        supernet_game(supernet, images, labels[:3])


def test_monte_carlo_matches_enumeration_within_three_standard_errors(game):
    supernet, images, labels = game
    value_fn = supernet_game(supernet, images, labels, "neg_loss")
    exact = exact_shapley(value_fn, 10)
    assert exact.sum() == pytest.approx(value_fn(np.ones(10, bool)) - value_fn(np.zeros(10, bool)), abs=1e-9)
    result = shapley_values(value_fn, 10, seed=0, max_permutations=100)
    error = np.abs(result.values - exact)
    assert np.all(error <= 3 * result.stderr + 1e-9), (error, result.stderr)
    assert error.max() < 0.25 * np.abs(exact).max()  # and the estimate is actually informative
