"""Item 1: the job budget (KILLSAFE_MAX_JOB_SECONDS) is enforced per job: an async handler is
cancelled and a sandboxed child killed at the budget, the attempt fails (or retries) with reason
`timeout` and is counted, the slot is free for the next job, and liveness fails when every slot is
held by a handler that ignores its cancellation."""

from __future__ import annotations

import os
import time

from killsafe_worker import contract
from tests.conftest import REPO, RedisServer
from tests.worker.conftest import WorkerFactory, client, enqueue, job_hash, job_state, wait_for
from tests.worker.test_cpu_sandbox import alive, child_pid_of

BUDGET = 2.0
BUDGET_ENV = {contract.ENV_MAX_JOB_SECONDS: str(BUDGET)}
HANDLERS_ENV = {
    contract.ENV_HANDLERS: "tests.worker.stubborn_handlers:HANDLERS",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
}


def test_a_handler_that_never_returns_is_stopped_at_the_budget_and_the_queue_moves_on(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    worker = workers.start(env=BUDGET_ENV)  # concurrency 1: the hung job holds the only slot
    hung = enqueue(redis_server.url, "sleep", {"seconds": 3600}, attempts=2, backoff={"type": "fixed", "delay": 10})
    queued = [enqueue(redis_server.url, "echo", {"n": n}) for n in range(3)]
    wait_for(lambda: job_state(r, hung) == "active", 20, "the hung job to start")
    started = time.monotonic()

    wait_for(lambda: job_state(r, hung) == "failed", 30, "the hung job to fail after its retry")
    took = time.monotonic() - started
    print(f"two attempts of a never-returning handler stopped after {took:.2f} s (budget {BUDGET} s each)")
    failed = job_hash(r, hung)
    assert failed["failedReason"].startswith(f"{contract.TIMEOUT_REASON}: the handler ran past max_job_seconds (2 s)")
    assert failed["atm"] == "2", "the timeout is an ordinary failure: retried while attempts remain"
    assert took >= 2 * BUDGET - 0.5
    wait_for(lambda: all(job_state(r, job) == "completed" for job in queued), 20, "the queued jobs")
    assert worker.metric(contract.METRIC_JOBS_TIMED_OUT, {"queue": "jobs"}) == 2
    timed_out = [entry for entry in worker.logs() if entry["msg"].startswith("job attempt timed out")]
    assert [(entry["jobId"], entry["attempt"]) for entry in timed_out] == [(hung, 1), (hung, 2)]
    assert worker.status(contract.LIVE_PATH) == 200


def test_a_sandboxed_child_is_killed_at_the_budget(redis_server: RedisServer, workers: WorkerFactory) -> None:
    r = client(redis_server.url)
    workers.start(env=BUDGET_ENV)
    job = enqueue(redis_server.url, "cpu", {"seconds": 600})
    worker = workers.started[0]
    child = child_pid_of(worker, job)
    wait_for(lambda: job_state(r, job) == "failed", 30, "the cpu job to time out")
    assert job_hash(r, job)["failedReason"].startswith(contract.TIMEOUT_REASON)
    wait_for(lambda: not alive(child), 10, "the job's child process to be killed")


def test_liveness_fails_when_every_slot_is_held_past_the_budget(redis_server: RedisServer, workers: WorkerFactory):
    r = client(redis_server.url)
    worker = workers.start(concurrency=2, env={contract.ENV_MAX_JOB_SECONDS: "1", **HANDLERS_ENV})
    first = enqueue(redis_server.url, "stubborn", {})
    wait_for(lambda: job_state(r, first) == "active", 20, "the first stubborn job")
    time.sleep(8)  # budget 1 s + the 5 s cancellation grace: one slot stuck, the other still free
    assert worker.status(contract.LIVE_PATH) == 200, "one stuck slot of two is not a reason to restart"
    second = enqueue(redis_server.url, "stubborn", {})
    wait_for(lambda: job_state(r, second) == "active", 20, "the second stubborn job")
    worker.wait_status(contract.LIVE_PATH, 503, timeout=20)
    _, body = worker.get(contract.LIVE_PATH)
    assert "all 2 slots held by jobs running past their budget" in body
