"""The project's error types, in one place: a stage catches ``SmpqError`` and nothing broader.

Each names a one-line, user-fixable failure; any other exception is a bug and keeps its traceback.
"""


class SmpqError(Exception):
    """A one-line, user-fixable failure: the message says what is wrong and how to fix it."""


class ConfigError(SmpqError, ValueError):
    """A params file that does not describe a valid run; the message names the key path."""


class DataError(SmpqError, ValueError):
    """Raw data that is missing, truncated or not in the expected format; the message says how to fix it."""


class ArtifactError(SmpqError, ValueError):
    """An artifact on disk is missing, corrupt or does not match what the caller expects."""


class TrainingDiverged(SmpqError, RuntimeError):
    """The loss became NaN or infinite: training cannot continue meaningfully."""


class BudgetError(SmpqError, ValueError):
    """A budget that no policy can meet (infeasible) or that cannot be read (unknown unit)."""


class ShapleyError(SmpqError, ValueError):
    """Shapley estimation inputs that do not fit together (chunks, permutations, players)."""


class TrackingUnavailable(SmpqError, RuntimeError):
    """The experiment-tracking store cannot be reached or read; the message names it and the fix."""


class InfeasibleBudget(BudgetError):
    """No choice fits the budget; ``minimum`` is the smallest ``budget`` of ``constraint`` that admits one."""

    def __init__(self, message: str, *, minimum: float, budget: float, constraint: str = "costs"):
        super().__init__(message)
        self.minimum = minimum
        self.budget = budget
        self.constraint = constraint


class ExportError(SmpqError, ValueError):
    """A model or policy the exporters (ONNX, bit-packed weights) cannot express, or a failed parity check."""


class SensitivityError(SmpqError, ValueError):
    """A Hessian-sensitivity estimate that cannot be used (a non-finite trace, inputs that do not fit)."""
