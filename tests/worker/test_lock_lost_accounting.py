"""Found by the conformance suite: a job whose lock is lost stays tracked by bullmq's lock manager,
which fails to renew it again every lockDuration/2 and emits lockRenewalFailed each time. The worker
counted every emission, so one lost job read as a dozen in killsafe_jobs_interrupted_total{reason=
"lock_lost"}. A lost lock is one casualty: counted (and logged) once per claim."""

from __future__ import annotations

import time

from killsafe_worker import contract
from tests.conftest import RedisServer
from tests.worker.conftest import WorkerFactory, client, enqueue, wait_for

FAST = {contract.ENV_LOCK_DURATION_MS: "2000", contract.ENV_STALLED_INTERVAL_MS: "60000"}
LOCK_LOST = {"queue": "jobs", "reason": "lock_lost"}


def test_a_lost_lock_is_counted_once_however_often_its_renewal_fails(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    worker = workers.start(env=FAST)  # concurrency 1 and no stalled check soon: nothing re-claims the job
    job = enqueue(redis_server.url, "sleep", {"seconds": 30})
    lock = f"bull:jobs:{job}:lock"
    wait_for(lambda: r.get(lock), 20, "the job to be claimed and locked")

    r.set(lock, "another-worker-took-it", px=60_000)  # what a re-claim by another worker leaves
    wait_for(lambda: worker.metric(contract.METRIC_JOBS_INTERRUPTED, LOCK_LOST) >= 1, 10, "the lost lock counted")
    time.sleep(4)  # four more renewal rounds (every lockDuration / 2), each failing again
    assert worker.metric(contract.METRIC_JOBS_INTERRUPTED, LOCK_LOST) == 1
    lost = [entry for entry in worker.logs() if entry["msg"] == "job locks lost"]
    assert [entry["jobIds"] for entry in lost] == [[job]]
