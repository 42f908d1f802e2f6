"""Serve the pipeline as a Prefect deployment on the cron schedule from ``params.yaml`` (section ``schedule``).

    python -m pipelines.serve [--params params.yaml] [--project .]
    prefect deployment run 'smpq-pipeline/smpq'          # trigger a run now, from another shell

The schedule and the params file are checked before anything is served; a bad one stops with one line
``error: ...`` naming the key and the fix. Runs of the deployment never overlap (``global_limit=1``): two
flow runs would both call DVC and one would fail on DVC's repository lock. It needs a Prefect server
(``prefect server start`` and ``PREFECT_API_URL``); stopping this process pauses the schedule.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines import entry_args
from pipelines.flow import pipeline_flow
from smpq.config import ConfigError, load_params

DEPLOYMENT = "smpq"


class ServeError(ValueError):
    """The deployment cannot be served as configured; the message says why and how to fix it."""


def check_schedule(cron: str, timezone: str, where: str) -> None:
    """Prefect's own validation of a cron expression and an IANA time zone, as one clear message."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron="* * * * *", timezone=timezone)
    except ValueError:
        raise ServeError(f"{where}: schedule.timezone: {timezone!r} is not an IANA time zone "
                         "(e.g. UTC, Europe/Berlin, America/New_York)") from None
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise ServeError(f"{where}: schedule.cron: {cron!r} is not a valid cron expression (five fields: "
                         "minute hour day-of-month month day-of-week, e.g. '0 3 * * *')") from None


def validate(project: Path, params: str) -> tuple[str, str]:
    """``(cron, timezone)`` once the project, its params file and the schedule are known to be good."""
    if not (project / "dvc.yaml").is_file():
        raise ServeError(f"{project}: no dvc.yaml here; give --project the folder holding the pipeline")
    path = project / params
    if not path.is_file():
        raise ServeError(f"{path}: params file not found; give --params a file relative to the project")
    try:
        schedule = load_params(path).schedule
    except ConfigError as err:
        raise ServeError(str(err)) from None
    check_schedule(schedule.cron, schedule.timezone, str(path))
    return schedule.cron, schedule.timezone


def serve(project: Path, params: str) -> None:
    """Serve ``smpq-pipeline/smpq`` until interrupted: cron schedule, fixed parameters, one run at a time."""
    from prefect.schedules import Cron

    cron, timezone = validate(project, params)
    pipeline_flow().serve(name=DEPLOYMENT, schedules=[Cron(cron, timezone=timezone)], global_limit=1, limit=1,
                          parameters={"project": str(project), "params": params},
                          description=f"SMPQ pipeline of {project} ({params}), cron {cron!r} {timezone}")


def main(argv: list[str] | None = None) -> None:
    args = entry_args("python -m pipelines.serve", __doc__.splitlines()[0], argv)
    try:
        serve(Path(args.project).resolve(), args.params)
    except ServeError as err:
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
