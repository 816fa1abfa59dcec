"""The `cpu` handler's child process: a crash, an OOM or the drain deadline fails or hands back only
that job; the worker and its event loop carry on. Real worker, real child processes, real signals.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from killsafe_worker import contract
from tests.conftest import RedisServer
from tests.worker.conftest import WorkerFactory, WorkerProcess, client, enqueue, job_hash, job_state, wait_for


def child_pid_of(worker: WorkerProcess, job_id: str) -> int:
    entry = worker.wait_log(
        lambda e: e["msg"] == "job child process started" and e.get("jobId") == job_id, 30, "the job's child pid"
    )
    assert entry["jobName"] == "cpu" and entry["attempt"] == 1  # the job is bound to every handler log line
    return int(entry["childPid"])


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_child_crash_and_oom_fail_only_their_job(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    worker = workers.start(concurrency=2)
    crashing = enqueue(redis_server.url, "cpu", {"seconds": 60})
    child = child_pid_of(worker, crashing)

    started = time.monotonic()  # the child burns a core; the worker's loop must stay responsive
    assert worker.status(contract.LIVE_PATH) == 200
    assert time.monotonic() - started < 2.0

    os.kill(child, signal.SIGKILL)
    wait_for(lambda: job_state(r, crashing) == "failed", 20, "the crashed job to fail")
    assert "killed by SIGKILL" in job_hash(r, crashing)["failedReason"]

    hog = enqueue(redis_server.url, "cpu", {"seconds": 0.1, "allocate_mib": 512, "memory_limit_mib": 64})
    wait_for(lambda: job_state(r, hog) == "failed", 30, "the memory hog to fail")
    assert "out of memory" in job_hash(r, hog)["failedReason"]

    fine = enqueue(redis_server.url, "cpu", {"seconds": 0.2})
    wait_for(lambda: job_state(r, fine) == "completed", 30, "a healthy cpu job after the crashes")
    echo = enqueue(redis_server.url, "echo", {"still": "working"})
    wait_for(lambda: job_state(r, echo) == "completed", 10, "an echo job after the crashes")

    assert worker.proc.poll() is None
    assert worker.metric(contract.METRIC_JOBS_INTERRUPTED, {"queue": "jobs", "reason": "child_crashed"}) == 1
    assert worker.metric(contract.METRIC_JOBS_INTERRUPTED, {"queue": "jobs", "reason": "child_oom"}) == 1
    assert worker.metric(contract.METRIC_JOBS_FAILED, {"queue": "jobs"}) == 2
    failures = [e for e in worker.logs() if e["msg"].startswith("job attempt failed")]
    assert {e["jobId"] for e in failures} == {crashing, hog}
    assert all(e["jobName"] == "cpu" and e["attempt"] == 1 for e in failures)


def test_drain_deadline_kills_the_child_and_hands_the_job_back(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    worker = workers.start(env={contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "1"})
    job = enqueue(redis_server.url, "cpu", {"seconds": 60})
    child = child_pid_of(worker, job)

    worker.send(signal.SIGTERM)
    assert worker.wait_exit(timeout=15) == contract.EXIT_DRAIN_DEADLINE
    wait_for(lambda: not alive(child), 5, "the job's child process to be gone")
    assert job_state(r, job) in ("delayed", "waiting")
