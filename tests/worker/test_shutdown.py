"""Kill the worker at any moment: SIGTERM drains, SIGKILL loses nothing, the drain deadline hands
jobs back, and shutdown ends on time even with Redis gone. Real processes, real signals, real Redis.
"""

from __future__ import annotations

import signal
import time

from killsafe_worker import contract
from tests.conftest import RedisServer
from tests.worker.conftest import (
    WorkerFactory,
    client,
    enqueue,
    job_hash,
    job_state,
    lock_holder_pid,
    marker,
    side_effects,
    wait_for,
)

FAST_RECOVERY = {contract.ENV_LOCK_DURATION_MS: "2000", contract.ENV_STALLED_INTERVAL_MS: "1000"}


def effects_for(r, key: str) -> list[dict]:
    return [effect for effect in side_effects(r) if effect["key"] == key]


def test_sigterm_mid_job_finishes_it_claims_nothing_new_and_exits_0(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    worker = workers.start(env={contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "20"})
    running = enqueue(redis_server.url, "sleep", {"seconds": 3, "idempotency_key": "term-1"}, jobId="term-1")
    queued = enqueue(redis_server.url, "sleep", {"seconds": 0.1, "idempotency_key": "term-2"}, jobId="term-2")
    wait_for(lambda: job_state(r, running) == "active", 20, "the first job to start")
    time.sleep(1)

    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    worker.wait_status(contract.READY_PATH, 503, timeout=5)  # draining: not ready, still serving
    code = worker.wait_exit(timeout=30)

    assert code == contract.EXIT_OK
    assert time.monotonic() - signalled > 1.0, "the in-flight job was not allowed to finish"
    assert job_state(r, running) == "completed"
    assert len(effects_for(r, "term-1")) == 1
    assert job_state(r, queued) == "waiting", "a job was claimed after SIGTERM"
    assert effects_for(r, "term-2") == []
    assert any(entry["msg"].startswith("drained") for entry in worker.logs())


def test_sigkill_mid_job_is_rerun_by_another_worker_with_one_side_effect(
    redis_server: RedisServer, workers: WorkerFactory
):
    r = client(redis_server.url)
    pair = [workers.start(env=FAST_RECOVERY), workers.start(env=FAST_RECOVERY)]
    job = enqueue(redis_server.url, "sleep", {"seconds": 3, "idempotency_key": "kill-1"}, jobId="kill-1")
    wait_for(lambda: job_state(r, job) == "active", 20, "the job to start")
    started = time.monotonic()
    claimer_pid = wait_for(lambda: lock_holder_pid(r, job), 5, "the claiming worker's heartbeat")
    victim, survivor = sorted(pair, key=lambda worker: worker.pid != claimer_pid)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    victim.send(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait_exit(timeout=10)
    wait_for(lambda: job_state(r, job) == "completed", 20, "the killed worker's job to complete elsewhere")

    assert time.monotonic() - killed < 8.0
    effects = effects_for(r, "kill-1")
    assert len(effects) == 1, effects
    assert effects[0]["pid"] == survivor.pid
    assert marker(r, "kill-1")["pid"] == survivor.pid
    assert survivor.proc.poll() is None


def test_drain_deadline_hands_the_job_back_and_exits_nonzero_on_time(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    deadline = 2.0
    first = workers.start(env={contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(deadline)})
    job = enqueue(redis_server.url, "sleep", {"seconds": 4, "idempotency_key": "late-1"}, jobId="late-1")
    wait_for(lambda: job_state(r, job) == "active", 20, "the long job to start")

    signalled = time.monotonic()
    first.send(signal.SIGTERM)
    code = first.wait_exit(timeout=30)
    took = time.monotonic() - signalled

    assert code == contract.EXIT_DRAIN_DEADLINE
    assert deadline <= took < deadline + 5.0, took  # 5 s = budget.STOP_RESERVE_SECONDS
    summary = next(entry for entry in first.logs() if entry["msg"].startswith("drain deadline passed"))
    assert summary[contract.METRIC_JOBS_INTERRUPTED] == {"jobs": 1.0}
    # Handed back without consuming an attempt, not left to a lock expiry:
    assert job_state(r, job) in ("delayed", "waiting")
    assert job_hash(r, job).get("atm", "0") == "0"
    assert effects_for(r, "late-1") == []

    second = workers.start()
    wait_for(lambda: job_state(r, job) == "completed", 30, "another worker to complete the handed-back job")
    assert len(effects_for(r, "late-1")) == 1
    assert effects_for(r, "late-1")[0]["pid"] == second.pid


def test_sigterm_while_redis_is_down_exits_by_the_deadline_and_the_job_survives(
    redis_server: RedisServer, workers: WorkerFactory
):
    r = client(redis_server.url)
    deadline = 2.0
    first = workers.start(env={contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(deadline), **FAST_RECOVERY})
    job = enqueue(redis_server.url, "sleep", {"seconds": 5, "idempotency_key": "down-1"}, jobId="down-1")
    wait_for(lambda: job_state(r, job) == "active", 20, "the job to start")
    time.sleep(1.1)  # let the AOF (everysec) persist the claim

    redis_server.stop()
    first.wait_status(contract.READY_PATH, 503, timeout=15)
    assert first.status(contract.LIVE_PATH) == 200, "a Redis outage alone must not fail liveness"
    signalled = time.monotonic()
    first.send(signal.SIGTERM)
    code = first.wait_exit(timeout=30)
    took = time.monotonic() - signalled

    assert took < deadline + 5.0, took
    assert code != contract.EXIT_OK  # a job was interrupted and could not even be handed back
    first.logs()  # every line, even during the outage, is JSON

    redis_server.start()  # same data dir: the claim survived in the AOF, the lock expired meanwhile
    second = workers.start(env=FAST_RECOVERY)
    r = client(redis_server.url)
    wait_for(lambda: job_state(r, job) == "completed", 40, "the job to be recovered and re-run")
    effects = effects_for(r, "down-1")
    assert len(effects) == 1 and effects[0]["pid"] == second.pid, effects


def test_second_sigterm_skips_the_rest_of_the_drain(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    worker = workers.start(env={contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "120"})
    job = enqueue(redis_server.url, "sleep", {"seconds": 60, "idempotency_key": "hurry-1"}, jobId="hurry-1")
    wait_for(lambda: job_state(r, job) == "active", 20, "the long job to start")

    worker.send(signal.SIGTERM)
    worker.wait_status(contract.READY_PATH, 503, timeout=5)
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)  # an operator who cannot wait two minutes
    assert worker.wait_exit(timeout=30) == contract.EXIT_DRAIN_DEADLINE
    assert time.monotonic() - signalled < 5.0
    assert job_state(r, job) in ("delayed", "waiting")
