"""Stage runs left RUNNING by a process that died (kill -9, power loss) and how to recognise them.

Every stage run records the host, pid and pid start time (a reused pid has another) that opened it. A stage
that starts ends its own stage's RUNNING runs whose process on this host is gone, or that are older than
``tracking.stale_hours`` (a run from another host cannot be checked otherwise), as FAILED with the tag
``smpq.end_reason``. No MLflow import here: the client is passed in.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STAGE_TAG = "smpq.stage"
HOST_TAG, PID_TAG, PID_START_TAG = "smpq.host", "smpq.pid", "smpq.pid_start"


def process_tags() -> dict[str, str]:
    """Host, pid and the pid's start time (a reused pid has another) of this process, for stale-run checks."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PID_START_TAG: _pid_start(os.getpid()) or ""}


def _pid_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    now = _pid_start(pid)
    return not (start and now and now != start)


def stale_reason(tags: Mapping[str, str], start_ms: int, stale_hours: float, now: float | None = None) -> str | None:
    """Why a RUNNING run is dead: its process on this host is gone, or it is older than ``stale_hours``."""
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) == socket.gethostname() and pid.isdigit() and not _alive(int(pid), tags.get(PID_START_TAG)):
        return f"stale: process {pid} on {tags[HOST_TAG]} is gone (killed or crashed while running)"
    hours = ((now if now is not None else time.time()) - start_ms / 1000) / 3600
    if hours > stale_hours:
        return f"stale: RUNNING for {hours:.1f} h, longer than tracking.stale_hours ({stale_hours:g})"
    return None


def end_stale_runs(client: Any, experiment_id: str, stage: str, stale_hours: float,
                   end: Callable[[Any, str, str, str], None]) -> list[str]:
    """End ``stage``'s runs left RUNNING by a dead process as FAILED, tagged with why; returns their ids."""
    runs = client.search_runs([experiment_id], max_results=200, filter_string=(
        f"tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'RUNNING'"))
    ended = []
    for run in runs:
        if reason := stale_reason(run.data.tags, run.info.start_time, stale_hours):
            log.warning("MLflow: ending run %s of stage %s as FAILED: %s", run.info.run_id, stage, reason)
            end(client, run.info.run_id, "FAILED", reason)
            ended.append(run.info.run_id)
    return ended
