"""Node BullMQ (npm, pinned in tests/worker/node) and the killsafe worker on the same Redis: Node's
Queue.getWorkers() lists the worker (item 14), completed jobs carry processedBy (item 15), a custom
key prefix is honoured (item 16), and a global rate limit set with Node's setGlobalRateLimit paces
the killsafe worker the way it paces a Node worker (item 13)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from killsafe_worker import contract
from tests.conftest import RedisServer, require
from tests.worker.conftest import WorkerFactory, capture_output, wait_for

NODE_SOURCES = Path(__file__).parent / "node"
PREFIX = "acme"


@dataclass
class NodeBullMQ:
    """`node interop.mjs` from a cached `npm ci` of tests/worker/node (keyed by its lock file)."""

    node: str
    directory: Path

    def __call__(self, redis_url: str, command: str, **args: Any) -> Any:
        result = subprocess.run(
            [self.node, str(self.directory / "interop.mjs"), command, json.dumps(args)],
            env={**os.environ, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        capture_output(f"node interop.mjs {command}", result.stdout, result.stderr)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def node_bullmq() -> Iterator[NodeBullMQ]:
    node, npm = require("node", "Node BullMQ interop"), require("npm", "Node BullMQ interop")
    lock = (NODE_SOURCES / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "killsafe"
    directory = cache / f"node-interop-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (directory / "node_modules" / ".package-lock.json").exists():
        staging = directory.with_name(directory.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_SOURCES / name, staging / name)
        flags = ["--ignore-scripts", "--no-audit", "--no-fund"]
        offline = subprocess.run([npm, "ci", "--offline", *flags], cwd=staging, capture_output=True, timeout=600)
        if offline.returncode != 0:
            subprocess.run([npm, "ci", *flags], cwd=staging, check=True, capture_output=True, timeout=600)
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    shutil.copy(NODE_SOURCES / "interop.mjs", directory / "interop.mjs")
    yield NodeBullMQ(node, directory)


def _jobs(node_bullmq: NodeBullMQ, url: str, queue: str, ids: list[str]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = node_bullmq(url, "jobs", queue=queue, prefix=PREFIX, ids=ids)
    return jobs


def test_node_lists_the_worker_and_sees_who_processed_its_jobs(
    redis_server: RedisServer, workers: WorkerFactory, node_bullmq: NodeBullMQ
) -> None:
    url = redis_server.url
    ids = node_bullmq(
        url, "add", queue="interop", prefix=PREFIX, jobs=[{"name": "echo", "data": {"n": n}} for n in range(5)]
    )
    worker = workers.start(queues="interop", env={contract.ENV_KEY_PREFIX: PREFIX})
    worker_id = next(entry for entry in worker.logs() if entry["msg"] == "worker started")["workerId"]

    wait_for(lambda: all(job["state"] == "completed" for job in _jobs(node_bullmq, url, "interop", ids)), 30, "jobs")
    assert {job["processedBy"] for job in _jobs(node_bullmq, url, "interop", ids)} == {worker_id}
    names = node_bullmq(url, "workers", queue="interop", prefix=PREFIX)
    assert names and all(name.endswith(f":w:{worker_id}") for name in names), names
    assert node_bullmq(url, "workers", queue="interop", prefix="bull") == [], "listed under the wrong prefix"


def _start_times(jobs: list[dict[str, Any]]) -> list[float]:
    starts = sorted(int(job["processedOn"]) for job in jobs)
    return [round((start - starts[0]) / 1000, 2) for start in starts]


def test_a_node_global_rate_limit_paces_the_worker_like_a_node_worker(
    redis_server: RedisServer, workers: WorkerFactory, node_bullmq: NodeBullMQ
) -> None:
    url, jobs = redis_server.url, [{"name": "echo", "data": {"n": n}} for n in range(8)]
    limit = {"max": 2, "duration": 1000}
    node_ids = node_bullmq(url, "add", queue="paced-node", prefix=PREFIX, jobs=jobs, rateLimit=limit)
    node_bullmq(url, "work", queue="paced-node", prefix=PREFIX, count=len(jobs), concurrency=4)
    node_starts = _start_times(_jobs(node_bullmq, url, "paced-node", node_ids))

    ids = node_bullmq(url, "add", queue="paced", prefix=PREFIX, jobs=jobs, rateLimit=limit)
    begun = time.monotonic()
    workers.start(queues="paced", concurrency=4, env={contract.ENV_KEY_PREFIX: PREFIX})
    wait_for(lambda: all(job["state"] == "completed" for job in _jobs(node_bullmq, url, "paced", ids)), 30, "jobs")
    starts = _start_times(_jobs(node_bullmq, url, "paced", ids))
    print(f"start times at 2 jobs/s: killsafe {starts}, Node BullMQ {node_starts}")
    assert all(later - earlier >= 0.9 for earlier, later in zip(starts, starts[2:], strict=False)), starts
    assert starts[-1] <= node_starts[-1] + 1.5, f"killsafe {starts} vs Node {node_starts}"
    assert time.monotonic() - begun < 30
