"""Shapley fan-out: the ``shapley`` stage's permutation chunks as Prefect tasks on the task runner that
``params.yaml`` names (section ``fanout``), merged, written and recorded in ``dvc.lock`` exactly as
``dvc repro`` would (the stage runs the same chunks one after another; see ``stages.shapley_worker``).
Workers receive the validated params and the paths as task arguments.

Runners (``fanout.runner``); the result never depends on the runner, the worker count or the chunking:

- ``threads``: ``ThreadPoolTaskRunner(fanout.workers)`` in the flow's process; each thread loads its own
  supernet copy (a coalition is module state).
- ``processes``: Prefect's ``ProcessPoolTaskRunner(fanout.workers)`` (spawned processes, one torch thread each).
- ``dask``: ``prefect_dask.DaskTaskRunner`` on a loopback ``LocalCluster`` of ``fanout.workers`` worker
  processes (one thread each), or on the running scheduler at ``$SMPQ_DASK_ADDRESS`` / ``fanout.dask_address``;
  that cluster's workers must have this project installed and see the project folder at the same path.

Kernels (``runtime.cpu_kernels``, README "Reproducibility"): with ``pinned`` the worker processes of the
``processes`` and local ``dask`` runners start with the pinned kernel variables, so their chunks compute what
the pinned ``dvc repro`` stage does; ``threads`` runs in the flow's own process, whose kernels were fixed when
it loaded torch (a warning says so unless that process was started pinned).

A flow's task runner is fixed when the flow is defined, so the fan-out is a subflow given its runner with
``shapley_fanout.with_options(task_runner=task_runner(fanout))``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pipelines.dag import commit_stage, stage_command
from smpq.config import load_params
from stages.kernels import pin
from stages.session import tracked
from stages.shapley import SECTIONS, finish, record
from stages.shapley_worker import STAGE, chunk_plan, one_torch_thread, release_games, run_chunk, stage_inputs
from stages.tracking import PIPELINE_ENV

DASK_ENV = "SMPQ_DASK_ADDRESS"


def local_cluster_kwargs(workers: int) -> dict:
    """A Dask ``LocalCluster`` on loopback only: worker processes with one thread each, no dashboard."""
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
            "dashboard_address": None}


# What Dask's nannies put in a worker's environment before starting it. Dask's default also sets
# MALLOC_TRIM_THRESHOLD_, which switches off glibc's dynamic mmap threshold: every large activation tensor
# is then mmapped and page-faulted afresh, which made the supernet's evaluations 2.3x slower per worker here.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@contextmanager
def local_workers(kernels: dict[str, str] | None = None) -> Iterator[None]:
    """Start local Dask workers with ``WORKER_ENV`` (and the ``kernels`` variables) only; the cluster also
    exports variables into this process (``WORKER_ENV``, ``PYTHONHASHSEED``, ...), so the environment is put
    back afterwards (later stages keep their OpenMP threads)."""
    import dask.config
    import distributed  # noqa: F401  (registers the distributed config that is changed below)

    with restored(), dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV | (kernels or {})}):
        yield


def task_runner(fanout) -> TaskRunner:
    """The Prefect task runner for ``fanout`` (a ``FanoutConfig``): threads, processes or Dask."""
    if fanout.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=fanout.workers)
    if fanout.runner == "processes":
        return ProcessPoolTaskRunner(max_workers=fanout.workers, initializer=one_torch_thread)
    from prefect_dask import DaskTaskRunner

    address = os.environ.get(DASK_ENV) or fanout.dask_address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(fanout.workers))


@task(name="shapley-chunk", cache_policy=NO_CACHE, retries=0)
def shapley_chunk(params, paths, indices: list[int]):
    """One chunk of units on whichever worker the runner picks (the supernet is loaded once there)."""
    return run_chunk(params, paths, indices)


@contextmanager
def restored() -> Iterator[None]:
    """Put the environment back as it was when the block started: added variables removed, changed ones reset."""
    previous = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(previous):
            del os.environ[key]
        for key, value in previous.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (and the processes it starts), then restore them."""
    with restored():
        os.environ.update(values)
        yield


def worker_api_url() -> dict[str, str]:
    """``PREFECT_API_URL`` of this flow run's API, for worker processes to report to.

    Without it every worker process of a flow run in ephemeral mode (no server configured) starts a
    temporary Prefect server of its own: ~20 s and ~250 MiB each, measured here.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return {"PREFECT_API_URL": str(context.client.api_url)} if context and context.client else {}


def worker_kernels(cpu_kernels: str, runner: str) -> tuple[dict[str, str], str | None]:
    """The kernel variables the runner's worker processes start with (``runtime.cpu_kernels``), and a warning
    when the runner cannot honour them (threads in a flow process that loaded torch unpinned)."""
    kernels = pin(cpu_kernels, environ={})
    unpinned = {k: v for k, v in kernels.items() if os.environ.get(k) != v}
    if runner != "threads" or not unpinned:
        return kernels, None
    return kernels, ("runtime.cpu_kernels is pinned, but the threads runner computes in this flow process, which "
                     "loaded torch with its native kernels; use fanout.runner: processes or dask, or start the "
                     "flow with " + " ".join(f"{k}={v}" for k, v in unpinned.items()))


def run_fanout(project: str, pipeline_id: str, fanout, cpu_kernels: str = "native") -> dict:
    """The fan-out subflow on the runner ``fanout`` names, its worker processes reporting to this API and
    started with the kernels of ``cpu_kernels``."""
    kernels, warning = worker_kernels(cpu_kernels, fanout.runner)
    if warning:
        get_run_logger().warning(warning)
    workers = local_workers(kernels) if fanout.runner == "dask" else nullcontext()
    with environment(**worker_api_url(), **kernels), workers:
        return shapley_fanout.with_options(task_runner=task_runner(fanout))(project, pipeline_id)


@flow(name="shapley-fanout")
def shapley_fanout(project: str, pipeline_id: str) -> dict:
    """Map the stage's chunks over this flow's task runner, merge, write the outputs, ``dvc commit`` them."""
    root = Path(project)
    params_path, paths = stage_inputs(stage_command(root, STAGE), root)
    params = load_params(params_path)
    logger = get_run_logger()
    with environment(**{PIPELINE_ENV: pipeline_id}), tracked(STAGE, params, root, SECTIONS) as tracker:
        plan = [list(r) for r in chunk_plan(params)]
        logger.info("shapley: %d units in %d chunks on %s x%d", params.shapley.max_permutations, len(plan),
                    params.fanout.runner, params.fanout.workers)
        start = time.perf_counter()
        futures = shapley_chunk.map(unmapped(params), unmapped(paths), plan)
        blocks = [future.result() for future in futures]
        metrics = finish(params, paths, blocks, time.perf_counter() - start)
        record(tracker, metrics, paths)
    release_games()  # supernet copies of the threads runner (and of finish) live in this process
    commit_stage(root, STAGE)
    logger.info("shapley: %d permutations, %d evaluations in %.1f s", metrics["permutations"],
                metrics["evaluations"], metrics["wall_seconds"])
    return metrics
