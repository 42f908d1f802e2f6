"""Hessian sensitivity of the bit-width candidates (the ``hawq`` method), one module per concept:

- ``hutchinson``: Hutchinson's (1990) trace estimator with Rademacher probes and Hessian-vector products by
  double backward, its stopping rule, and the per-layer average traces of a model's loss (HAWQ-V2,
  Dong et al. 2020): weights and each layer's input activation;
- ``omega``: HAWQ-V3's (Yao et al. 2021) score Ω(l, b) = Tr(H_l)/n_l · ‖Q_b(X_l) − X_l‖² of every candidate,
  with the calibrated LSQ steps, and the explicit rule for a negative or non-finite trace.

The selection itself is the project's exact knapsack (``smpq.select.select_policy`` on −Ω).
"""

SENSITIVITY_FILE = "sensitivity.json"  # written by the sensitivity stage: traces, Ω per candidate, totals
