"""Prefix replay: later forwards reuse the recorded outputs of the units before a module, bit for bit."""

import pytest
import torch
from torch import nn

from smpq.shapley.prefix import PrefixReplay, compute_units


class Net(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.inplace = inplace
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), \
            nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU(inplace=inplace)  # called twice: one module, two calls
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 5 * 5, 3))

    def forward(self, x):
        y = self.relu(self.conv1(x))
        out = self.conv2(y)
        if self.inplace:
            out += y  # in place on a recorded output
        else:
            out = out + y
        return self.head(self.conv3(self.relu(out)))


@pytest.mark.parametrize("inplace", [False, True])
def test_replay_equals_a_full_forward_after_the_start_module_changes(inplace):
    torch.manual_seed(0)
    model, x = Net(inplace).eval(), torch.randn(3, 2, 5, 5)
    replay = PrefixReplay(model)
    with torch.no_grad():
        assert torch.equal(replay.record(x), model(x))
        for scale in (2.0, -1.0, 0.5):
            model.conv2.weight.mul_(scale)  # what a coalition change in conv2's groups does
            expected = model(x)
            assert torch.equal(replay.replay(x, [model.conv3, model.conv2]), expected)
    assert replay._copies is inplace  # copies only where the model writes into a recorded output


def test_units_are_layers_and_leaves_and_replay_needs_a_record():
    model = Net(False)
    assert [type(u).__name__ for u in compute_units(model)] == ["Conv2d", "Conv2d", "Conv2d", "ReLU", "Flatten",
                                                              "Linear"]
    with pytest.raises(ValueError, match="record first"):
        PrefixReplay(model).replay(torch.randn(1, 2, 5, 5), [model.conv2])


@pytest.mark.parametrize("inplace", [False, True])
def test_replay_many_runs_variants_of_the_start_module_side_by_side(inplace):
    torch.manual_seed(0)
    model, x = Net(inplace).eval(), torch.randn(3, 2, 5, 5)
    weight = model.conv2.weight.detach().clone()
    scales = (2.0, -1.0, 0.5)
    replay = PrefixReplay(model)
    with torch.no_grad():
        recorded = replay.record(x)
        expected = []
        for scale in scales:
            model.conv2.weight.copy_(weight * scale)
            expected.append(model(x))
        batched = replay.replay_many(x, [model.conv2], len(scales),
                                     lambda k: model.conv2.weight.copy_(weight * scales[k]))
        assert batched.shape == (3 * len(scales), 3)
        for got, want in zip(batched.chunk(len(scales)), expected):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)  # later units ran on 9 images, not 3
        model.conv2.weight.copy_(weight)
        assert torch.equal(replay.replay(x, [model.conv2]), recorded)  # the record was not touched
    assert replay.recorded_bytes() == sum(4 * n for n in (3 * 4 * 25, 3 * 4 * 25, 3 * 4 * 25, 3 * 4 * 25, 3 * 4 * 25,
                                                          3 * 100, 3 * 3))
    with pytest.raises(ValueError, match="at least one variant, got 0"):
        replay.replay_many(x, [model.conv2], 0, lambda k: None)
