"""The Shapley fan-out gives the in-process answer: chunks on a 2-worker Dask cluster (loopback only), and
the flow's fan-out subflow on every task runner against ``dvc repro`` of the tiny project (slow)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import cloudpickle
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipelines.fanout import local_cluster_kwargs, local_workers, task_runner, worker_kernels
from smpq.config import FanoutConfig
from smpq.shapley.estimate import combine, sample_units, shapley_values
from smpq.shapley.sampling import chunk_indices
from stages.kernels import PINNED_ENV
from tests.pipeline.conftest import tiny_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test module


class SineGame:
    """A cheap game with interactions of every order, rebuilt from its seed wherever it is unpickled."""

    def __init__(self, n_players: int, seed: int):
        self.n_players, self.seed = n_players, seed
        self.weights = np.random.default_rng(seed).normal(size=n_players)

    def __call__(self, mask: np.ndarray) -> float:
        return float(mask.sum() + 1.5 * np.sin(mask @ self.weights) + 1.5)


def chunk_on_worker(indices, n_players, game_seed, seed, antithetic):
    """What a fan-out task does: build the game in the worker process, sample one chunk."""
    return sample_units(SineGame(n_players, game_seed), n_players, indices, seed=seed, antithetic=antithetic)


@pytest.fixture(scope="module")
def dask_client():
    """A 2-worker local Dask cluster, loopback only, worker processes with one thread each."""
    from distributed import Client, LocalCluster

    before = dict(os.environ)
    with local_workers(), LocalCluster(**local_cluster_kwargs(2)) as cluster, Client(cluster) as client:
        assert "MALLOC_TRIM_THRESHOLD_" not in client.run(lambda: dict(os.environ)).popitem()[1]
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        yield client
    assert dict(os.environ) == before  # the nannies' exports into this process are undone


@pytest.mark.parametrize("antithetic, tolerance", [(True, None), (False, 0.2)])
def test_chunks_on_a_two_worker_dask_cluster_equal_the_in_process_run(dask_client, antithetic, tolerance):
    n, seed, total, chunks = 9, 4, 60, 5
    ranges = chunk_indices(total, chunks, antithetic=antithetic)
    futures = dask_client.map(chunk_on_worker, [list(r) for r in ranges], n_players=n, game_seed=1, seed=seed,
                              antithetic=antithetic, pure=False)
    blocks = dask_client.gather(futures)
    pids = set(dask_client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    fanned = combine(blocks, antithetic=antithetic, tolerance=tolerance)
    local = shapley_values(SineGame(n, 1), n, seed=seed, max_permutations=total, antithetic=antithetic,
                           tolerance=tolerance, chunks=chunks)
    sequential = shapley_values(SineGame(n, 1), n, seed=seed, max_permutations=total, antithetic=antithetic,
                                tolerance=tolerance)
    for name in ("values", "stderr", "n_samples", "trace"):
        assert np.array_equal(getattr(fanned, name), getattr(local, name), equal_nan=True), name
        assert np.array_equal(getattr(fanned, name), getattr(sequential, name), equal_nan=True), name
    assert fanned.n_evaluations == local.n_evaluations
    if tolerance is not None:
        assert 20 < fanned.n_permutations < total  # the stopping rule cut the merged chunks part-way


def test_task_runner_follows_the_fanout_section(monkeypatch):
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    monkeypatch.delenv("SMPQ_DASK_ADDRESS", raising=False)
    threads = task_runner(FanoutConfig(runner="threads", workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    assert isinstance(task_runner(FanoutConfig(runner="processes", workers=2)), ProcessPoolTaskRunner)
    local = task_runner(FanoutConfig(runner="dask", workers=2))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                                    "dashboard_address": None}
    remote = task_runner(FanoutConfig(runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert remote.address == "tcp://127.0.0.1:8786"
    monkeypatch.setenv("SMPQ_DASK_ADDRESS", "tcp://127.0.0.1:9999")
    overridden = task_runner(FanoutConfig(runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert overridden.address == "tcp://127.0.0.1:9999"


def test_pinned_kernels_reach_the_local_dask_workers(monkeypatch):
    from distributed import Client, LocalCluster

    for key in PINNED_ENV:
        monkeypatch.delenv(key, raising=False)
    kernels, warning = worker_kernels("pinned", "dask")
    assert kernels == PINNED_ENV and warning is None
    with local_workers(kernels), LocalCluster(**local_cluster_kwargs(1)) as cluster, Client(cluster) as client:
        worker_env = client.run(lambda: dict(os.environ)).popitem()[1]
    assert {k: worker_env.get(k) for k in PINNED_ENV} == PINNED_ENV
    assert all(key not in os.environ for key in PINNED_ENV)  # this process keeps its own kernels


def test_the_threads_runner_warns_that_it_cannot_pin_a_running_process(monkeypatch):
    for key in PINNED_ENV:
        monkeypatch.delenv(key, raising=False)
    assert worker_kernels("native", "threads") == ({}, None)
    kernels, warning = worker_kernels("pinned", "threads")
    assert kernels == PINNED_ENV and "fanout.runner: processes or dask" in warning
    for key, value in PINNED_ENV.items():
        monkeypatch.setenv(key, value)  # a flow process started pinned: nothing to warn about
    assert worker_kernels("pinned", "threads") == (PINNED_ENV, None)


DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from prefect import flow
    from pipelines.fanout import run_fanout
    from smpq.config import load_params

    @flow(name="fanout-check")
    def check(project: str, runner: str) -> dict:
        fanout = load_params(Path(project) / "params.yaml").fanout
        assert fanout.runner == runner
        return run_fanout(project, f"fanout-check-{runner}", fanout)

    if __name__ == "__main__":  # worker processes are spawned: they re-import this file
        for project in sys.argv[1:]:
            check(project, Path(project).name)
""")

RUNNERS = ("threads", "processes", "dask")


@pytest.mark.slow  # one temporary Prefect server, then the tiny supernet's Shapley chunks on each runner: ~3 min
def test_fanout_subflow_matches_dvc_repro_on_every_runner(reproduced, tmp_path):
    expected = (reproduced / "data/shapley/shapley.json").read_bytes()
    expected_metrics = json.loads((reproduced / "results/shapley/metrics.json").read_text())
    projects = [tmp_path / runner for runner in RUNNERS]
    for project in projects:
        shutil.copytree(reproduced, project, symlinks=True)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["fanout"].update(runner=project.name, workers=2)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.rmtree(project / "data/shapley")
        (project / "results/shapley/metrics.json").unlink()
    (tmp_path / "driver.py").write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), *map(str, projects)], cwd=projects[0],
                          env=tiny_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for project in projects:
        runner = project.name
        assert (project / "data/shapley/shapley.json").read_bytes() == expected, runner
        metrics = json.loads((project / "results/shapley/metrics.json").read_text())
        assert metrics == expected_metrics, runner  # no timings in metrics files
        status = subprocess.run(["dvc", "status", "--json"], cwd=project, env=tiny_env(project), capture_output=True,
                                text=True)
        assert json.loads(status.stdout) == {}, f"{runner}: dvc.lock does not record the fan-out's outputs"
        client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("smpq").experiment_id],
                                  filter_string=f"tags.`smpq.pipeline_id` = 'fanout-check-{runner}'")
        parents = [r for r in runs if r.data.tags.get("smpq.role") == "pipeline"]
        assert [r.info.run_name for r in runs if r not in parents] == ["shapley"]
        assert len(parents) == 1 and parents[0].data.tags["smpq.budget"] in parents[0].info.run_name  # described
        assert all(r.info.status == "FINISHED" for r in runs)
