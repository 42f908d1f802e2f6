"""SMPQ: Shapley-based mixed-precision quantization (Kang et al., IJCAI 2025).

The library core: data, models, quantizers, cost model, training loop, supernet, Shapley scoring and
budgeted policy selection. It depends on torch, numpy and scipy only; orchestration (DVC, Prefect,
MLflow) lives in ``stages/`` and ``pipelines/``.
"""

__version__ = "0.1.0"
