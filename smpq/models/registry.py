"""Model registry (timm-style): build any supported network by name, optionally from a local checkpoint.

Stages and configs refer to models by a string (``model.name`` in ``params.yaml``), so every architecture
registers a builder ``(num_classes, in_channels, **kwargs) -> nn.Module`` here. Pretrained weights come
only from a local ``state_dict`` file, loaded with ``weights_only=True`` (SPEC §4) — never from a hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smpq.artifacts import load_state_dict
from smpq.errors import ArtifactError

logger = logging.getLogger(__name__)

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}

_SHOWN_KEYS = 5  # how many mismatching keys an error message lists


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(num_classes, in_channels, **kwargs)`` under ``name``."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    num_classes: int,
    in_channels: int,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and ``in_channels`` input planes.

    ``kwargs`` go to the builder (e.g. ``widths`` of ``compact_resnet``). ``pretrained`` is a local
    ``state_dict`` file whose keys and shapes must match the built model exactly; any mismatch is an
    ``ArtifactError`` naming the file and the first offending keys.
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    model = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if pretrained is not None:
        load_pretrained(model, pretrained, name=name)
    return model


def load_pretrained(model: nn.Module, path: str | Path, name: str = "model") -> nn.Module:
    """Load a local ``state_dict`` into ``model`` after checking every key and shape against it."""
    path = Path(path)
    state = load_state_dict(path)
    expected = model.state_dict()
    problems = _mismatches(state, expected)
    if problems:
        raise ArtifactError(
            f"{path}: checkpoint does not fit model {name!r} "
            f"(built with other num_classes/in_channels/widths?): {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=True)
    logger.info("loaded pretrained weights for %s from %s", name, path)
    return model


def _mismatches(state: dict[str, Any], expected: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a loaded ``state`` and the model's own ``state_dict``."""
    problems = []
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing:
        problems.append(f"missing: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected: {_shown(unexpected)}")
    for key, value in state.items():
        if key not in expected:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif value.shape != expected[key].shape:
            problems.append(
                f"shape mismatch for {key}: file {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
            )
        if len(problems) >= 2 + _SHOWN_KEYS:
            problems.append("...")
            break
    return problems


def _shown(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    return f"{keys[:_SHOWN_KEYS]}{more}"
