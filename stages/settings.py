"""Params for the orchestration layer: flows (``pipelines/``) never import the library, so they load the
validated ``params.yaml`` through this stage-level module (schedule, fan-out and tracking sections)."""

from __future__ import annotations

from smpq.config import ConfigError, Params, load_params

__all__ = ["ConfigError", "Params", "load_params"]
