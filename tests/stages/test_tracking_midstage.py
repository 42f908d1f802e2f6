"""A tracking store that fails in the middle of a stage: one error line, or one warning when not required."""

from __future__ import annotations

import logging

import pytest
from mlflow.exceptions import MlflowException

from smpq.errors import TrackingUnavailable
from stages.tracking import Tracker

URI = "http://127.0.0.1:9"


class DyingClient:
    """An MLflow client whose store is gone: every call raises what MLflow raises then."""

    def __init__(self) -> None:
        self.calls = 0

    def log_batch(self, *args, **kwargs):
        self.calls += 1
        raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed "
                              "with exception HTTPConnectionPool: Max retries exceeded "
                              "(Caused by NewConnectionError: [Errno 111] Connection refused)")

    log_dict = log_batch


def test_a_required_store_that_fails_mid_stage_is_one_tracking_error_naming_store_and_fix():
    tracker = Tracker(DyingClient(), "run", URI, required=True)
    with pytest.raises(TrackingUnavailable) as info:
        tracker.log_metrics({"train.loss": 0.5}, step=1)
    message = str(info.value)
    assert "\n" not in message
    assert URI in message and "Connection refused" in message
    assert "tracking.required: false" in message


def test_a_store_that_is_not_required_warns_once_and_the_stage_goes_on(caplog):
    client = DyingClient()
    tracker = Tracker(client, "run", URI, required=False)
    with caplog.at_level(logging.WARNING, logger="stages.tracking"):
        tracker.log_metrics({"train.loss": 0.5}, step=1)
        tracker.log_params({"method": "smpq"})
        tracker.log_dict({"a": 1}, "alpha.json")
    assert client.calls == 1  # after the first failure nothing more is sent
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "runs untracked" in warnings[0].getMessage()
