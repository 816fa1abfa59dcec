"""Issue 11.2: a real worker in a real memory cgroup (v1 here) drains before the OOM kill.

The cgroup's own limit is high (the kernel never kills here); KILLSAFE_MEMORY_LIMIT_MIB sets the lower
limit the worker plans for, so the thresholds are crossed by a job's real, cgroup-charged memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from killsafe_worker import contract
from tests import cgroups
from tests.cgroups import require_memory_v1
from tests.conftest import REPO, RedisServer
from tests.worker.conftest import WorkerFactory, WorkerProcess, client, enqueue, job_hash, job_state, wait_for

PLANNED_LIMIT_MIB = 400
DRAIN_PERCENT = 60
"""Drain at 240 MiB, hand back at 320 MiB (halfway to the limit)."""
ENV = {
    contract.ENV_HANDLERS: "tests.worker.memory_hungry_handlers:HANDLERS",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    contract.ENV_MEMORY_LIMIT_MIB: str(PLANNED_LIMIT_MIB),
    contract.ENV_MEMORY_DRAIN_PERCENT: str(DRAIN_PERCENT),
}


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    require_memory_v1("creates a memory cgroup")
    with cgroups.memory_cgroup("memory-pressure", 1024 * 2**20) as group:
        yield group


def _worker_in(group: Path, workers: WorkerFactory) -> WorkerProcess:
    worker = workers.start(env=ENV, wait_ready=False)
    (group / "cgroup.procs").write_text(str(worker.pid))  # the job's memory is charged from here on
    worker.wait_ready()
    return worker


def test_above_the_threshold_the_job_in_flight_finishes_nothing_new_is_claimed_exit_4(
    memory_cgroup: Path, redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    worker = _worker_in(memory_cgroup, workers)
    assert worker.metric(contract.METRIC_WORKER_MEMORY_LIMIT, {}) == PLANNED_LIMIT_MIB * 2**20
    hog = enqueue(redis_server.url, "hungry", {"hold_mib": 260, "leak_mib": 0, "seconds": 4})
    later = enqueue(redis_server.url, "sleep", {"seconds": 0})
    worker.wait_log(lambda e: e["msg"].startswith("memory pressure:"), 30, "the drain for memory")
    status, body = worker.get(contract.READY_PATH)
    assert status == 503 and "memory above the drain threshold" in body
    assert worker.metric(contract.METRIC_MEMORY_PRESSURE_RESTARTS, {}) == 1
    assert worker.metric(contract.METRIC_WORKER_MEMORY, {}) > DRAIN_PERCENT / 100 * PLANNED_LIMIT_MIB * 2**20

    assert worker.wait_exit(30) == contract.EXIT_MEMORY_PRESSURE
    assert job_state(r, hog) == "completed", "the job in flight finished"
    assert job_hash(r, hog)["atm"] == "1"
    assert job_state(r, later) == "waiting", "nothing new was claimed while draining"
    assert not any(e["msg"].startswith("drain for memory ended early") for e in worker.logs()), "nothing handed back"


def test_memory_still_rising_while_draining_hands_the_job_back_without_using_an_attempt(
    memory_cgroup: Path, redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    worker = _worker_in(memory_cgroup, workers)
    hog = enqueue(redis_server.url, "hungry", {"hold_mib": 340, "leak_mib": 0, "seconds": 20})
    assert worker.wait_exit(30) == contract.EXIT_MEMORY_PRESSURE
    logs = worker.logs()
    assert any(e["msg"].startswith("memory still rising while draining") for e in logs)
    [summary] = [e for e in logs if e["msg"].startswith("drain for memory ended early: 1 job(s) interrupted")]
    assert summary[contract.METRIC_JOBS_INTERRUPTED] == {"jobs": 1.0}, "reason memory_pressure"
    wait_for(lambda: job_state(r, hog) in ("waiting", "delayed"), 10, "the job back in the queue")
    assert job_hash(r, hog).get("atm", "0") == "0", "a hand-back uses no attempt"


def test_a_sandboxed_child_s_memory_counts_too(
    memory_cgroup: Path, redis_server: RedisServer, workers: WorkerFactory
) -> None:
    """The CPU sandbox's children are forked from the worker, so its cgroup (and the drain) counts them."""
    r = client(redis_server.url)
    worker = _worker_in(memory_cgroup, workers)
    job = enqueue(redis_server.url, "cpu", {"seconds": 3, "allocate_mib": 200})
    worker.wait_log(lambda e: e["msg"].startswith("memory pressure:"), 30, "the drain for the child's memory")
    assert worker.wait_exit(30) == contract.EXIT_MEMORY_PRESSURE
    assert job_state(r, job) == "completed", "the job in flight finished in its child"
