"""Item 16: a custom BullMQ key prefix (spec redis.key_prefix -> KILLSAFE_KEY_PREFIX) is used by the
worker (claims, probes, metrics), the web app and the dead-letter CLI alike; nothing lands under
`bull:`. (Node producers with the same prefix: test_node_interop.py.)"""

from __future__ import annotations

import asyncio
import json

from bullmq import Queue

from killsafe_worker import contract, dlq
from tests.conftest import RedisServer
from tests.worker.conftest import QUEUE, WorkerFactory, capture_output, client, job_state, wait_for
from tests.worker.test_web import call, start_web

PREFIX = "acme"


def test_worker_web_and_dlq_share_a_custom_prefix(redis_server: RedisServer, workers: WorkerFactory, capsys) -> None:
    r = client(redis_server.url)
    worker = workers.start(env={contract.ENV_KEY_PREFIX: PREFIX})
    web = start_web(redis_server.url, **{contract.ENV_KEY_PREFIX: PREFIX, contract.ENV_QUEUES: QUEUE})
    try:
        status, body = call("POST", web.url("/jobs"), {"name": "echo", "data": {"via": "web"}})
        assert status == 202, body
        wait_for(lambda: job_state(r, body["id"], key_prefix=PREFIX) == "completed", 20, "the web's job")
    finally:
        web.stop()

    async def add_failing() -> str:
        queue = Queue(QUEUE, {"connection": redis_server.url, "prefix": PREFIX})
        try:
            return str((await queue.add("fail", {"message": "for the dead-letter list"}, {"attempts": 1})).id)
        finally:
            await queue.close()

    failing = asyncio.run(add_failing())
    wait_for(lambda: job_state(r, failing, key_prefix=PREFIX) == "failed", 20, "the failing job")
    wait_for(lambda: worker.metric(contract.METRIC_QUEUE_JOBS, {"queue": QUEUE, "state": "failed"}) == 1, 10, "metrics")
    assert r.keys("bull:*") == [], "something was written under the default prefix"

    env = {contract.ENV_REDIS_URL: redis_server.url, contract.ENV_QUEUES: QUEUE}
    for prefix, expected in ((PREFIX, [failing]), ("bull", [])):
        capsys.readouterr()
        assert dlq.main(["list", "--json"], environ={**env, contract.ENV_KEY_PREFIX: prefix}) == 0
        out, err = capsys.readouterr()
        capture_output("dlq list", out, err)
        assert [job["id"] for job in json.loads(out)["jobs"]] == expected
