"""``search``: DARTS first-order alternation through ``smpq.train.fit`` (SPEC §3.2)."""

from __future__ import annotations

import pytest
import torch

from smpq.config import SupernetConfig
from smpq.cost import budget_bitops
from smpq.supernet import search

METRICS = {"train_loss", "val_top1", "val_loss", "expected_gbitops", "argmax_gbitops", "target_gbitops",
           "alpha_entropy", "alpha_task_loss", "complexity_loss", "alpha_steps"}


def _batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 10, 10, generator=generator), torch.randint(0, 3, (8,), generator=generator))
            for _ in range(n)]


def _alphas(supernet) -> list[torch.Tensor]:
    return [a.detach().clone() for a in supernet.alpha_parameters()]


def _config(**overrides) -> SupernetConfig:
    base = dict(epochs=1, warmup_epochs=0, lr=0.01, alpha_lr=0.05, complexity_weight=0.1, complexity_form="hinge")
    return SupernetConfig(**{**base, **overrides})


def test_one_epoch_updates_alpha_and_reports_metrics(tiny) -> None:
    supernet = tiny.supernet(random_alpha=False)
    before, weight_before = _alphas(supernet), supernet.model.conv_a.weight.detach().clone()
    seen = []
    target = budget_bitops(tiny.table, tiny.fixed, avg_bits=4)
    history = search(supernet, _batches(4, 0), _batches(2, 1), _config(), target,
                     on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)), progress=False)
    assert len(history) == 1 and seen == [(1, history[0])]
    assert METRICS <= set(history[0])
    assert history[0]["alpha_steps"] == 4
    assert history[0]["target_gbitops"] == pytest.approx(target / 1e9)
    assert any(not torch.equal(a, b) for a, b in zip(before, _alphas(supernet)))
    assert not torch.equal(weight_before, supernet.model.conv_a.weight)
    assert all(p.requires_grad for p in supernet.parameters())
    assert supernet.coalition_mask is None


def test_warmup_epochs_keep_alpha_fixed(tiny) -> None:
    supernet = tiny.supernet(random_alpha=False)
    before = _alphas(supernet)
    snapshots = []
    history = search(supernet, _batches(3, 0), _batches(2, 1), _config(epochs=2, warmup_epochs=1),
                     budget_bitops(tiny.table, tiny.fixed, avg_bits=4),
                     on_epoch=lambda epoch, metrics: snapshots.append(_alphas(supernet)), progress=False)
    assert [m["alpha_steps"] for m in history] == [0, 3]
    assert all(torch.equal(a, b) for a, b in zip(before, snapshots[0]))
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshots[1]))


@pytest.mark.parametrize("form", ["hinge", "ratio"])
def test_large_complexity_weight_lowers_expected_bitops(tiny, form: str) -> None:
    finals = {}
    for weight in (0.0, 50.0):
        supernet = tiny.supernet(random_alpha=False)
        start = supernet.expected_bitops().item()
        history = search(supernet, _batches(6, 0), _batches(2, 1),
                         _config(complexity_weight=weight, complexity_form=form, alpha_lr=0.1),
                         0.25 * start, progress=False)
        finals[weight] = supernet.expected_bitops().item()
        assert history[0]["expected_gbitops"] == pytest.approx(finals[weight] / 1e9)
    assert finals[50.0] < 0.8 * start  # 6 Adam steps of at most 0.1 per logit; stem/fc BitOps are constant
    assert finals[50.0] < 0.85 * finals[0.0]


def test_empty_search_val_is_an_error(tiny) -> None:
    with pytest.raises(ValueError, match="search_val"):
        search(tiny.supernet(), _batches(2, 0), [], _config(), 1e6, progress=False)


def test_single_path_weight_steps_use_one_candidate_per_group(tiny, monkeypatch) -> None:
    """With single_path 1.0 every weight step sees one candidate per group; α steps and eval the mixture."""
    supernet = tiny.supernet(random_alpha=False)
    seen = []
    original = type(supernet).set_coalition

    def spy(self, mask):
        seen.append(None if mask is None else mask.copy())
        original(self, mask)
    monkeypatch.setattr(type(supernet), "set_coalition", spy)
    calls = []
    monkeypatch.setattr(supernet, "forward", lambda x: (calls.append(supernet.coalition_mask),
                                                        supernet.model(x))[1])
    target = budget_bitops(tiny.table, tiny.fixed, avg_bits=4)
    search(supernet, _batches(3, 0), _batches(2, 1), _config(single_path=1.0), target, seed=5, progress=False)
    masks = [m for m in seen if m is not None]
    assert len(masks) == 3  # one draw per weight step
    groups = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert all(all(m[g].sum() == 1 for g in groups) for m in masks)
    steps = [c for c in calls[:6]]  # per step: the α forward (mixture), then the weight forward (one path)
    assert all(c is None for c in steps[0::2]) and all(c is not None for c in steps[1::2])
    assert all(c is None for c in calls[6:])  # validation after the epoch: the full mixture
    assert supernet.coalition_mask is None
