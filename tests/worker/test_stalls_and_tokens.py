"""Items 5 and 6 end to end: every in-flight job is counted and interrupted on its own (not by a
shared lock token), and a job that stalls past KILLSAFE_MAX_STALLED_COUNT is failed with a reason
that says why, logged by the worker that failed it."""

from __future__ import annotations

import json
import signal
import time

from killsafe_worker import contract
from tests.conftest import RedisServer
from tests.worker.conftest import (
    WorkerFactory,
    client,
    enqueue,
    enqueue_many,
    job_hash,
    job_state,
    lock_holder_pid,
    wait_for,
)

FAST_RECOVERY = {contract.ENV_LOCK_DURATION_MS: "2000", contract.ENV_STALLED_INTERVAL_MS: "1000"}


def test_twenty_in_flight_jobs_are_each_counted_and_handed_back(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    deadline = 1.0
    worker = workers.start(concurrency=20, env={contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(deadline)})
    ids = enqueue_many(redis_server.url, [("sleep", {"seconds": 60}, {}) for _ in range(20)])
    wait_for(lambda: r.llen("bull:jobs:active") == 20, 30, "20 jobs in flight")

    def heartbeat_in_flight() -> int:
        record = next(iter(r.scan_iter(f"{contract.WORKER_REGISTRY_PREFIX}*")), None)
        return int(json.loads(r.get(record) or "{}").get("inFlight", 0)) if record else 0

    wait_for(lambda: heartbeat_in_flight() == 20, 10, "the heartbeat to count 20 jobs in flight")
    locks = {r.get(f"bull:jobs:{job}:lock") for job in ids}
    assert len(locks) == 20, f"{len(locks)} distinct lock tokens for 20 jobs"

    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(timeout=30) == contract.EXIT_DRAIN_DEADLINE
    took = time.monotonic() - signalled
    print(f"20 jobs interrupted and handed back; exit {took:.2f} s after SIGTERM (drain deadline {deadline} s)")
    assert took < deadline + 5.0
    summary = next(entry for entry in worker.logs() if entry["msg"].startswith("drain deadline passed"))
    assert summary["msg"].startswith("drain deadline passed: 20 job(s) interrupted")
    assert summary[contract.METRIC_JOBS_INTERRUPTED] == {"jobs": 20.0}
    handed_back = [entry for entry in worker.logs() if entry["msg"].startswith("job interrupted and handed back")]
    assert sorted(entry["jobId"] for entry in handed_back) == sorted(ids)
    assert all(job_state(r, job) in ("delayed", "waiting") for job in ids)
    assert all(job_hash(r, job).get("atm", "0") == "0" for job in ids), "a hand-back used an attempt"


def test_a_job_past_max_stalled_count_fails_with_the_reason_and_it_is_logged(
    redis_server: RedisServer, workers: WorkerFactory
):
    r = client(redis_server.url)
    victim = workers.start(env=FAST_RECOVERY)
    job = enqueue(redis_server.url, "sleep", {"seconds": 60}, attempts=5)
    wait_for(lambda: job_state(r, job) == "active", 20, "the job to start")
    victim.send(signal.SIGKILL)
    victim.wait_exit(timeout=10)

    survivor = workers.start(env={**FAST_RECOVERY, contract.ENV_MAX_STALLED_COUNT: "0"})
    wait_for(lambda: job_state(r, job) == "failed", 30, "the stalled job to be failed")
    failed = job_hash(r, job)
    assert "the worker running it lost its lock 1 time(s)" in failed["failedReason"]
    assert "max_stalled_count (0)" in failed["failedReason"]
    assert json.loads(failed["stacktrace"]) == [failed["failedReason"]], "no 'NoneType: None' trace"
    assert failed["atm"] == "1", "failed for good although attempts remained: that is what the limit means"
    logged = survivor.wait_log(lambda e: e["msg"].startswith("job failed for good"), 10, "the failure logged")
    assert logged["jobId"] == job and "lost its lock" in logged["msg"]
    stalled = survivor.wait_log(lambda e: e["msg"].startswith("job stalled"), 10, "the stall logged")
    assert stalled["jobId"] == job


def test_the_default_stall_limit_reruns_a_job_after_two_kills(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    job = enqueue(redis_server.url, "sleep", {"seconds": 4, "idempotency_key": "twice-killed"}, jobId="twice-killed")
    for _ in range(2):  # concurrency 1: the default limit is 2
        victim = workers.start(env=FAST_RECOVERY)
        wait_for(lambda v=victim: lock_holder_pid(r, job) == v.pid, 30, "the job running on the new worker")
        victim.send(signal.SIGKILL)
        victim.wait_exit(timeout=10)
    workers.start(env=FAST_RECOVERY)
    wait_for(lambda: job_state(r, job) == "completed", 40, "the job to complete after two kills")
    assert job_hash(r, job)["stc"] == "2"
