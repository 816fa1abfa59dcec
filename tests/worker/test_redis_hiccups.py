"""Redis hiccups during a stream of jobs: a CLIENT PAUSE and a restart (AOF) are ridden out with no
job lost, no side effect repeated, and no worker exiting or crash-looping.
"""

from __future__ import annotations

import signal
from collections import Counter

from killsafe_worker import contract
from tests.conftest import RedisServer
from tests.worker.conftest import WorkerFactory, client, enqueue_many, side_effects, wait_for

JOBS = 300


def test_client_pause_and_restart_lose_and_repeat_nothing(redis_server: RedisServer, workers: WorkerFactory):
    env = {contract.ENV_LOCK_DURATION_MS: "5000", contract.ENV_STALLED_INTERVAL_MS: "2000"}
    pair = [workers.start(concurrency=10, env=env), workers.start(concurrency=10, env=env)]
    keys = [f"stream-{n}" for n in range(JOBS)]
    enqueue_many(
        redis_server.url, [("sleep", {"seconds": 0.2, "idempotency_key": key}, {"jobId": key}) for key in keys]
    )
    r = client(redis_server.url)

    def completed() -> int:
        try:
            return int(r.zcard("bull:jobs:completed"))
        except OSError:
            return 0

    wait_for(lambda: completed() >= 30, 60, "the first jobs to complete")
    redis_server.cli("CLIENT", "PAUSE", "400", "ALL")
    wait_for(lambda: completed() >= 120, 60, "jobs to complete after CLIENT PAUSE")
    before_restart = completed()
    assert before_restart < JOBS - 50, "the stream ended before the restart; the test proves nothing"
    redis_server.restart(down_seconds=0.5)
    r = client(redis_server.url)
    assert completed() >= before_restart, "completions were lost across the restart (AOF)"
    wait_for(lambda: completed() == JOBS, 90, f"all {JOBS} jobs to complete after the restart")

    effects = Counter(effect["key"] for effect in side_effects(r))
    assert set(effects) == set(keys)
    assert [key for key, count in effects.items() if count > 1] == [], "a side effect ran twice"
    assert r.zcard("bull:jobs:failed") == 0
    for worker in pair:
        assert worker.proc.poll() is None, f"worker {worker.pid} exited:\n{worker.log_text()[-3000:]}"
        worker.wait_ready(timeout=20)
        assert not any(entry["level"] == "CRITICAL" for entry in worker.logs())
    for worker in pair:
        worker.send(signal.SIGTERM)
    assert [worker.wait_exit(timeout=30) for worker in pair] == [contract.EXIT_OK, contract.EXIT_OK]
