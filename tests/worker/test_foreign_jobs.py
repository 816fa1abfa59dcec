"""What other producers put on a queue: reused job ids (item 2), job hashes that cannot be parsed
(item 3) and job names no handler knows (item 17), with a real worker and the dead-letter CLI."""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import SimpleNamespace

from bullmq import Queue

from killsafe_worker import contract, dlq
from killsafe_worker.handlers import idempotency_key_of
from tests.conftest import REPO, RedisServer
from tests.worker.conftest import (
    QUEUE,
    WorkerFactory,
    capture_output,
    client,
    enqueue,
    job_hash,
    job_state,
    side_effects,
    wait_for,
)


def test_the_default_idempotency_key_is_the_job_instance_not_the_id() -> None:
    first = SimpleNamespace(id="42", timestamp=1_700_000_000_000, data={})
    reused = SimpleNamespace(id="42", timestamp=1_700_000_999_000, data={})
    assert idempotency_key_of(first) == "42@1700000000000"
    assert idempotency_key_of(first) == idempotency_key_of(SimpleNamespace(**vars(first))), "stable across re-runs"
    assert idempotency_key_of(reused) != idempotency_key_of(first)
    explicit = SimpleNamespace(id="43", timestamp=1, data={contract.IDEMPOTENCY_DATA_FIELD: "order-7"})
    assert idempotency_key_of(explicit) == "order-7"


def test_a_new_job_reusing_an_id_after_obliterate_runs_its_side_effect(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    workers.start()
    first = enqueue(redis_server.url, "sleep", {"seconds": 0.05}, jobId="reused")
    wait_for(lambda: job_state(r, first) == "completed", 20, "the first job")

    async def obliterate() -> None:  # Bull Board's "Obliterate" button
        queue = Queue(QUEUE, {"connection": redis_server.url})
        try:
            await queue.obliterate(force=True)
        finally:
            await queue.close()

    asyncio.run(obliterate())
    time.sleep(0.01)  # a new creation time, as any real reuse has
    again = enqueue(redis_server.url, "sleep", {"seconds": 0.05}, jobId="reused")
    wait_for(lambda: job_state(r, again) == "completed", 20, "the job that reuses the id")
    assert json.loads(job_hash(r, again)["returnvalue"])["recorded"] is True, "the new job's side effect was skipped"
    keys = [effect["key"] for effect in side_effects(r)]
    assert len(keys) == 2 and len(set(keys)) == 2 and all(key.startswith("reused@") for key in keys), keys


def test_an_unparsable_foreign_job_is_failed_once_and_can_be_inspected(
    redis_server: RedisServer, workers: WorkerFactory, capsys
) -> None:
    r = client(redis_server.url)
    worker = workers.start(env={contract.ENV_LOCK_DURATION_MS: "1000", contract.ENV_STALLED_INTERVAL_MS: "500"})
    r.hset(f"bull:{QUEUE}:foreign-1", mapping={"name": "import", "data": "<xml>not json</xml>", "opts": "{}"})
    r.lpush(f"bull:{QUEUE}:wait", "foreign-1")
    r.zadd(f"bull:{QUEUE}:marker", {"0": 0})
    wait_for(lambda: job_state(r, "foreign-1") == "failed", 20, "the unparsable job to be failed")
    time.sleep(2)  # a few lock and stall intervals: it must not come back
    assert job_state(r, "foreign-1") == "failed"
    reason = job_hash(r, "foreign-1")["failedReason"]
    assert reason.startswith("job could not be parsed: data is not JSON ('<xml>not json</xml>')")
    lines = [entry for entry in worker.logs() if "foreign-1" in json.dumps(entry)]
    assert [entry["msg"] for entry in lines] == [f"job failed for good: {reason}"], lines
    job = enqueue(redis_server.url, "echo", {"still": "working"})
    wait_for(lambda: job_state(r, job) == "completed", 20, "a well-formed job after it")

    env = {contract.ENV_REDIS_URL: redis_server.url, contract.ENV_QUEUES: QUEUE}
    for argv in (["list", "--json"], ["show", "foreign-1", "--json"]):
        capsys.readouterr()
        assert dlq.main(argv, environ=env) == 0
        out, err = capsys.readouterr()
        capture_output("dlq", out, err)
        assert reason in out, out
    retry = ["retry", "foreign-1", "--by", "ops", "--reason", "fixed upstream"]
    assert dlq.main(retry, environ=env) == dlq.EXIT_NOTHING_DONE
    assert "cannot be parsed" in capsys.readouterr().err


def test_an_unknown_job_name_fails_at_once_naming_the_handlers_and_the_readme_says_why(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    workers.start()
    job = enqueue(redis_server.url, "resize-image", {}, attempts=3)
    wait_for(lambda: job_state(r, job) == "failed", 20, "the unknown job name to fail")
    failed = job_hash(r, job)
    assert failed["atm"] == "1", "an unknown name is not retried: no retry can add a handler"
    assert "no handler for job name 'resize-image'" in failed["failedReason"]
    assert "every worker on a queue must handle every job name on it" in failed["failedReason"]

    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## The reference worker image\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README lacks its worker image section"
    assert "Unknown job names" in section.group(1)
    assert "every worker on a BullMQ queue must handle every job name on it" in section.group(1)
