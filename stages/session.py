"""What every stage entry point shares: arguments, logging, params, tracking and clean failures.

A stage is ``python -m stages.<name> --params params.yaml --<input> PATH ... --out PATH``; every path
comes from ``dvc.yaml``. Known failures (bad params, missing inputs, divergence, a file system that refuses a
write, an unusable tracking store) end with one line ``error: ...`` and exit status 1; the stage's outputs
are written atomically, so none is half-written. A stop signal ends the stage's run KILLED.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from smpq.artifacts import write_json
from smpq.config import Params, load_params
from smpq.device import ONE_CPU_PROCESS, Execution
from smpq.errors import SmpqError
from stages import launch
from stages.run_info import describe_pipeline_run, numeric, stage_params
from stages.tracking import NullTracker, Tracker, stage_run, stop_on_signals

log = logging.getLogger("smpq.stage")

KNOWN_FAILURES = (SmpqError, OSError)  # anything else is a bug and keeps its traceback
# The fix for each file-system refusal (OSError.errno), said after the path it concerns.
OS_FIXES = {
    errno.EACCES: "permission denied; make the folder writable (chmod u+w) or run as its owner",
    errno.EPERM: "operation not permitted; make the folder writable (chmod u+w) or run as its owner",
    errno.EROFS: "the file system is read-only; write the outputs to a writable one",
    errno.ENOTDIR: "a part of the path is a file, not a folder; move that file away or choose another path",
    errno.EISDIR: "a folder is in the way of a file; move it away or choose another path",
    errno.EEXIST: "a file is in the way of a folder; move it away or choose another path",
    errno.ENOSPC: "no space left on the device; free space (e.g. dvc gc) and rerun",
    errno.EDQUOT: "disk quota exceeded; free space or raise the quota and rerun",
    errno.EFBIG: "file too large for this file system or the file-size limit (ulimit -f); raise it and rerun",
    errno.ENOENT: "no such file or folder; run the stage that produces it first or fix the path",
}


@dataclass
class Session:
    name: str
    params: Params
    args: argparse.Namespace
    tracker: Tracker
    root: Path
    execution: Execution = ONE_CPU_PROCESS

    def record(self, metrics: dict, *artifacts: Path, timings: dict | None = None) -> None:
        """The stage's final metrics (named as DVC shows them) and its output files or folders on its MLflow
        run; ``timings`` go to MLflow and to the ``--timings`` file, which no stage depends on."""
        self.tracker.log_metrics(numeric(metrics))
        for artifact in artifacts:
            self.tracker.log_artifact(artifact)
        if timings:
            self.tracker.log_metrics(numeric(timings))
            if getattr(self.args, "timings", None) is not None and self.execution.is_main:
                write_json(self.args.timings, timings)

    def log_step(self, step: int, metrics: dict) -> None:
        """A point of the per-tenth-of-an-epoch training curve, as ``steps.<name>`` at the global step."""
        self.tracker.log_metrics({f"steps.{k}": v for k, v in metrics.items() if k not in ("step", "epoch")},
                                 step=step)


def parse_args(name: str, paths: list[str], argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"SMPQ stage '{name}'")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    parser.add_argument("--timings", type=Path, default=None,
                        help="write the stage's timings here (JSON; kept out of the metrics files)")
    for path in paths:
        parser.add_argument(f"--{path}", type=Path, required=True)
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


@contextmanager
def tracked(name: str, params: Params, root: Path, sections: tuple[str, ...]) -> Iterator[Tracker]:
    """The stage's MLflow child run with the seed and the params ``sections`` it depends on logged
    (used by every stage, and by the Prefect fan-out that runs the ``shapley`` stage's work)."""
    with stage_run(name, params.tracking, root) as tracker:
        tracker.log_params(stage_params(name, params, sections))
        describe_pipeline_run(tracker, params, root)
        yield tracker


@contextmanager
def session(name: str, args: argparse.Namespace, sections: tuple[str, ...], *,
            module: str | None = None, argv: list[str] | None = None) -> Iterator[Session]:
    """Load params, resolve the device (and the DDP process group under torchrun), open the stage's tracked
    run on the main process only; a known failure ends in one ``error:`` line, exit 1. A training stage
    passes its ``module`` (and ``argv``): with ``runtime.processes > 1`` it is re-run under torchrun."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_on_signals()  # a stage stopped by SIGTERM, SIGINT, SIGHUP, ... still ends its MLflow run (KILLED)
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd())
    try:
        params = load_params(args.params)
        if module is not None and (status := launch.relaunch(module, params.runtime, argv, os.environ)) is not None:
            if status != 0:
                raise SmpqError(f"the {params.runtime.processes} torchrun workers exited with status {status} "
                                "(their own error lines are above)")
            raise SystemExit(0)
        execution = launch.start(params.runtime, os.environ)
        try:
            with _tracked_on_main(name, params, root, sections, execution) as tracker:
                yield Session(name, params, args, tracker, root, execution)
        finally:
            launch.stop(execution)
    except KNOWN_FAILURES as err:
        log.debug("stage %s failed", name, exc_info=True)
        print(f"error: stage '{name}' failed: {describe(err)}", file=sys.stderr)
        raise SystemExit(1) from None


@contextmanager
def _tracked_on_main(name: str, params: Params, root: Path, sections: tuple[str, ...],
                     execution: Execution) -> Iterator[Tracker]:
    """The stage's tracked run in the main process; the other DDP workers log nothing (one run per stage)."""
    if not execution.is_main:
        yield NullTracker()
        return
    with tracked(name, params, root, sections) as tracker:
        yield tracker


def describe(err: BaseException) -> str:
    """One line: an ``SmpqError``'s message, or an ``OSError``'s path, what went wrong and the fix."""
    if not isinstance(err, OSError) or isinstance(err, SmpqError):
        return " ".join(str(err).split())
    path = err.filename if err.filename is not None else "(unknown path)"
    fix = OS_FIXES.get(err.errno, f"{err.strerror or err}; check the path and the file system")
    return f"{path}: {fix}"
