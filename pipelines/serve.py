"""Serve the pipeline as a Prefect deployment on the cron schedule from ``params.yaml`` (section ``schedule``).

    python -m pipelines.serve [--params params.yaml] [--project .]
    prefect deployment run 'smpq-pipeline/smpq'          # trigger a run now, from another shell

First a Prefect server must answer at ``PREFECT_API_URL`` (5 s timeout, no heavy import yet), then the
params file and the schedule are checked, all before Prefect and the flow are imported; any problem stops
with one line ``error: ...`` naming the key or setting and the fix. Runs of the deployment never overlap
(``global_limit=1``): two flow runs would both call DVC and one would fail on DVC's repository lock. It needs
a Prefect server (``prefect server start`` and ``PREFECT_API_URL``); stopping this process pauses the schedule.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from pipelines import entry_args

DEPLOYMENT = "smpq"
START_SERVER = ("start one with `prefect server start --host 127.0.0.1` and set "
                "PREFECT_API_URL=http://127.0.0.1:4200/api")


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
    from smpq.config import ConfigError, load_params  # imports torch (~5 s): after the server check

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


def api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment, else from the active profile in ``$PREFECT_HOME``."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    try:
        profiles = tomllib.loads((home / "profiles.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")


def check_server(timeout: float = 5.0) -> str:
    """The API URL of a Prefect server that answers its health check; a schedule needs a server that
    outlives this process (without one Prefect would start a temporary server and wait minutes)."""
    url = api_url()
    if not url:
        raise ServeError(f"PREFECT_API_URL is not set: serving a schedule needs a Prefect server; {START_SERVER}")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return url
            problem = f"answered HTTP {response.status}"
    except (OSError, ValueError) as err:  # URLError, timeouts and malformed URLs
        problem = f"is unreachable ({getattr(err, 'reason', err)})"
    raise ServeError(f"PREFECT_API_URL={url}: no Prefect server there, its health check {problem}; "
                     f"{START_SERVER}")


def serve(project: Path, params: str) -> None:
    """Serve ``smpq-pipeline/smpq`` until interrupted: cron schedule, fixed parameters, one run at a time."""
    check_server()
    cron, timezone = validate(project, params)
    from prefect.schedules import Cron

    from pipelines.flow import pipeline_flow
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
