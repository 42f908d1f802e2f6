"""BN recalibration of a sub-network: exact batch statistics inside the block, the old ones restored after."""

import torch
from torch import nn

from smpq.supernet.batchnorm import batchnorm_layers, recalibrated


def test_statistics_are_the_average_batch_mean_and_variance_and_are_restored_after():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU()).eval()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    batches = [torch.randn(4, 1, 6, 6), torch.randn(6, 1, 6, 6) + 1]
    per_batch = [model[0](b).detach().transpose(0, 1).reshape(3, -1) for b in batches]
    mean = sum(f.mean(dim=1) for f in per_batch) / 2
    with recalibrated(model, batches):
        assert torch.allclose(bn.running_mean, mean, atol=1e-6)
        assert torch.allclose(bn.running_var, sum(f.var(dim=1) for f in per_batch) / 2, rtol=1e-5)
        assert not bn.training and bn.momentum is None
        out = model(batches[0])  # eval-mode forward with the new statistics
        expected = torch.relu((model[0](batches[0]) - mean[:, None, None])
                              / torch.sqrt(bn.running_var[:, None, None] + bn.eps) * bn.weight[:, None, None]
                              + bn.bias[:, None, None])
        assert torch.allclose(out, expected, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())
    assert bn.momentum == 0.1 and not bn.training


def test_no_batches_leaves_the_statistics_alone_and_training_mode_is_restored():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    model[1].running_mean.fill_(3.0)
    with recalibrated(model, []):
        assert torch.equal(model[1].running_mean, torch.full((2,), 3.0))
    assert model[1].training and len(batchnorm_layers(model)) == 1
