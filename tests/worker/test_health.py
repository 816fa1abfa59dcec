"""/readyz, /livez, /metrics and `killsafe-worker healthcheck` against a real worker and real Redis states."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest
import redis

from killsafe_worker import contract
from tests.conftest import RedisServer, free_port
from tests.worker.conftest import WORKER_BIN, WorkerFactory, WorkerProcess, client, enqueue, job_state, wait_for

STALL = 2.0
"""KILLSAFE_LIVENESS_STALL_SECONDS for these tests."""
HEALTH_ENV = {contract.ENV_LIVENESS_STALL_SECONDS: str(STALL), contract.ENV_LOCK_DURATION_MS: "4000"}


def problems(worker: WorkerProcess, path: str) -> list[str]:
    return list(json.loads(worker.get(path)[1])["problems"])


def stays(worker: WorkerProcess, path: str, status: int, seconds: float) -> None:
    """`path` answers `status` throughout `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert worker.status(path) == status, f"{path} left {status}: {problems(worker, path)}"
        time.sleep(0.2)


def healthcheck(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, contract.ENV_HEALTH_PORT: str(port)}
    return subprocess.run([str(WORKER_BIN), "healthcheck", *args], env=env, capture_output=True, text=True, timeout=30)


def test_healthy_worker_metrics_and_healthcheck_cli(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    job = enqueue(redis_server.url, "echo", {"hello": "world"})
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "an echo job")

    assert worker.status(contract.READY_PATH) == 200
    assert worker.status(contract.LIVE_PATH) == 200
    _, body = worker.get(contract.METRICS_PATH)
    for name in (
        contract.METRIC_JOBS_COMPLETED,
        contract.METRIC_JOBS_FAILED,
        contract.METRIC_JOB_DURATION + "_bucket",
        contract.METRIC_QUEUE_JOBS,
        contract.METRIC_JOBS_INTERRUPTED,
        contract.METRIC_LAST_JOB_COMPLETED,
        contract.METRIC_WORKER_READY,
    ):
        assert f"\n{name}" in body, f"{name} missing from /metrics"
    assert worker.metric(contract.METRIC_JOBS_COMPLETED, {"queue": "jobs"}) == 1.0
    assert worker.metric(contract.METRIC_WORKER_READY, {}) == 1.0
    for state in contract.QUEUE_STATES:
        worker.metric(contract.METRIC_QUEUE_JOBS, {"queue": "jobs", "state": state})
    registration = client(redis_server.url).get(f"{contract.WORKER_REGISTRY_PREFIX}{socket_name(worker)}")
    assert registration and json.loads(registration)["pid"] == worker.pid
    assert client(redis_server.url).ttl(f"{contract.WORKER_REGISTRY_PREFIX}{socket_name(worker)}") > 0

    assert healthcheck(worker.port).returncode == 0
    dead = healthcheck(free_port())
    assert dead.returncode == 1
    assert "refused" in dead.stderr.lower()


def socket_name(worker: WorkerProcess) -> str:
    started = next(entry for entry in worker.logs() if entry["msg"] == "worker started")
    return str(started["workerId"])


def test_redis_outage_fails_readiness_not_liveness(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    enqueue(redis_server.url, "sleep", {"seconds": 60})  # keeps the slot busy: the backlog below is real
    enqueue(redis_server.url, "echo", {})

    redis_server.stop()
    worker.wait_status(contract.READY_PATH, 503, timeout=15)
    assert any("redis" in problem for problem in problems(worker, contract.READY_PATH))
    stays(worker, contract.LIVE_PATH, 200, STALL + 3)  # an outage is not a reason to restart
    assert healthcheck(worker.port, "--probe", "live").returncode == 0
    assert healthcheck(worker.port).returncode == 1

    redis_server.start()
    worker.wait_status(contract.READY_PATH, 200, timeout=20)
    assert worker.proc.poll() is None
    # The running job's lock expired during the outage (4 s lock): counted as a casualty.
    lock_lost = {"queue": "jobs", "reason": "lock_lost"}
    wait_for(lambda: worker.metric(contract.METRIC_JOBS_INTERRUPTED, lock_lost) == 1, 10, "lock_lost == 1")


def test_evicting_redis_is_refused(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    worker.wait_status(contract.READY_PATH, 503, timeout=15)
    assert any("allkeys-lru" in problem for problem in problems(worker, contract.READY_PATH))
    refusal = worker.wait_log(lambda e: e["msg"].startswith("refusing to process jobs"), 5, "a refusal log line")
    assert refusal["level"] == "ERROR" and refusal["policy"] == "allkeys-lru"

    job = enqueue(redis_server.url, "echo", {})
    stays(worker, contract.LIVE_PATH, 200, STALL + 2)  # refusing on purpose is not a stall
    assert job_state(client(redis_server.url), job) == "waiting", "a job was claimed from an evicting Redis"

    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    worker.wait_status(contract.READY_PATH, 200, timeout=15)
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "the job once Redis is safe")


def test_liveness_ignores_paused_queues_and_busy_slots_but_catches_a_real_stall(
    redis_server: RedisServer, workers: WorkerFactory
):
    r = client(redis_server.url)
    worker = workers.start(env=HEALTH_ENV)

    # A paused queue holds jobs back on purpose: not a stall.
    r.hset("bull:jobs:meta", "paused", 1)
    held = enqueue(redis_server.url, "echo", {})
    stays(worker, contract.LIVE_PATH, 200, STALL + 3)
    assert job_state(r, held) == "waiting"

    # Writes paused while a job waits and a slot is free: the worker cannot claim anything. The queue
    # is resumed without a wake-up marker (and writes paused in the same round trip), so the worker
    # only tries to claim when its blocking wait times out, and that claim is what the pause blocks.
    # (Not in MULTI: Redis 7.0 asserts when a transaction with CLIENT PAUSE unblocks a client.)
    with r.pipeline(transaction=False) as pipe:
        pipe.hdel("bull:jobs:meta", "paused")
        pipe.execute_command("CLIENT", "PAUSE", "12000", "WRITE")
        pipe.execute()
    worker.wait_status(contract.LIVE_PATH, 503, timeout=STALL + 8)
    assert any("none processed" in problem for problem in problems(worker, contract.LIVE_PATH))
    redis_server.cli("CLIENT", "UNPAUSE")
    wait_for(lambda: job_state(r, held) == "completed", 20, "the held job once writes resume")
    worker.wait_status(contract.LIVE_PATH, 200, timeout=10)

    # Every slot busy with a long job while more wait: not a stall either.
    enqueue(redis_server.url, "sleep", {"seconds": STALL + 4})
    wait_for(lambda: r.llen("bull:jobs:active") == 1, 10, "the long job to start")
    enqueue(redis_server.url, "echo", {})
    stays(worker, contract.LIVE_PATH, 200, STALL + 2)


def test_stuck_event_loop_fails_liveness(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    worker.send(signal.SIGSTOP)  # nothing on the loop runs: the probe itself must time out
    try:
        stuck = healthcheck(worker.port, "--probe", "live", "--timeout", "1")
        assert stuck.returncode == 1
        assert "timed out" in stuck.stderr
        time.sleep(2.5)
    finally:
        worker.send(signal.SIGCONT)
    status, body = worker.get(contract.LIVE_PATH)
    assert status == 503, body
    assert "event loop" in body
    job = enqueue(redis_server.url, "echo", {})  # the loop runs again: jobs are processed
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "a job after the stall")


@pytest.fixture(autouse=True)
def _never_leave_redis_paused(redis_server: RedisServer):
    yield
    with contextlib.suppress(subprocess.CalledProcessError, redis.RedisError):
        redis_server.cli("CLIENT", "UNPAUSE")
