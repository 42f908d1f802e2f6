"""Batch-norm statistics re-estimated for one sub-network of the supernet (AdaBN, Li et al. 2016).

The supernet's BN layers hold running statistics of the *mixture*; a coalition that keeps fewer candidates
shifts the activations that reach them, so its accuracy measured with the mixture's statistics mostly shows
the mismatch (docs/shapley-game.md, "BN recalibration"). One-shot NAS re-estimates BN per sub-network for the
same reason (BigNAS, Yu et al. 2020; SPOS, Guo et al. 2020).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def recalibrated(model: nn.Module, batches: Sequence[torch.Tensor]) -> Iterator[nn.Module]:
    """Within the block, every BN layer of ``model`` uses the average over ``batches`` of their batch mean and
    (unbiased) variance under the model's current configuration (``momentum=None``, as AdaBN and BigNAS do);
    the old statistics, momentum and mode come back after."""
    layers = batchnorm_layers(model)
    saved = [(m.momentum, m.training, {k: v.clone() for k, v in m.state_dict().items()}) for m in layers]
    try:
        if batches:
            for m in layers:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            with torch.no_grad():
                for images in batches:
                    model(images)
            for m in layers:
                m.eval()
        yield model
    finally:
        for m, (momentum, training, state) in zip(layers, saved):
            m.load_state_dict(state)
            m.momentum = momentum
            m.train(training)
