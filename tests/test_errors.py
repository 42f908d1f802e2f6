"""The project's error types: one base a stage catches, each still a ValueError (or RuntimeError) for callers."""

import pytest

from smpq import errors


@pytest.mark.parametrize("kind", [errors.ConfigError, errors.DataError, errors.ArtifactError, errors.BudgetError,
                                  errors.ShapleyError, errors.InfeasibleBudget])
def test_user_errors_are_smpq_and_value_errors(kind):
    assert issubclass(kind, errors.SmpqError) and issubclass(kind, ValueError)


def test_divergence_is_an_smpq_runtime_error():
    assert issubclass(errors.TrainingDiverged, errors.SmpqError) and issubclass(errors.TrainingDiverged, RuntimeError)


def test_infeasible_budget_carries_the_smallest_feasible_budget():
    err = errors.InfeasibleBudget("too small", minimum=5.0, budget=4.0, constraint="extra_costs")
    assert (str(err), err.minimum, err.budget, err.constraint) == ("too small", 5.0, 4.0, "extra_costs")
