"""Bull Board keeps working next to killsafe: the Node dashboard most BullMQ users run, on the same Redis.

`@bull-board/api` + `@bull-board/express` (pinned in tests/dashboard/node/package-lock.json, installed
with `npm ci` into a cache keyed by the lock file) serve the queue the reference worker processed; the
test reads Bull Board's own JSON API the way its UI does, checks it lists the killsafe failed jobs with
their reasons and stack traces, and retries one there (PUT /api/queues/:queue/:id/retry), which the
reference worker then completes. Bull Board's retry is not in killsafe's audit trail: that, roles and
never-auto-retry are what killsafe's own page adds (README, "Bull Board next to killsafe").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from killsafe_worker import contract
from tests.conftest import IN_CI, RedisServer, free_port, require
from tests.dashboard.conftest import QUEUE, audit_records, fail_during_outage, handler_worker_env, job_state
from tests.worker.conftest import STARTUP_TIMEOUT, WorkerFactory, enqueue_many, wait_for

NODE_PROJECT = Path(__file__).with_name("node")
LOCK = NODE_PROJECT / "package-lock.json"


def node_modules_cache() -> Path:
    """`npm ci` into ${XDG_CACHE_HOME:-~/.cache}/killsafe/bull-board/<lock hash>/ once per lock file
    (offline from npm's cache when it can, from the registry otherwise); returns that folder."""
    npm = require("npm", "Bull Board is installed from the npm registry")
    digest = hashlib.sha256(LOCK.read_bytes() + (NODE_PROJECT / "package.json").read_bytes()).hexdigest()[:16]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "killsafe" / "bull-board"
    folder = cache_root / digest
    if (folder / "node_modules" / ".package-lock.json").exists():
        return folder
    partial = cache_root / f"{digest}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(NODE_PROJECT / name, partial / name)
    base = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    offline = subprocess.run([*base, "--offline"], cwd=partial, capture_output=True, text=True, check=False)
    if offline.returncode != 0:
        online = subprocess.run(base, cwd=partial, capture_output=True, text=True, check=False, timeout=600)
        if online.returncode != 0:
            message = f"npm ci failed:\n{online.stdout}\n{online.stderr}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def api(method: str, url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def bull_board(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = require("node", "Bull Board runs on Node.js")
    folder = node_modules_cache()
    shutil.copy(NODE_PROJECT / "board.mjs", folder / "board.mjs")  # resolves node_modules from its own folder
    port = free_port()
    log = tmp_path_factory.mktemp("bull-board") / "board.log"
    env = {
        **os.environ,
        "REDIS_URL": module_redis.url,
        "QUEUES": QUEUE,
        "PREFIX": contract.DEFAULT_KEY_PREFIX,
        "PORT": str(port),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([node, str(folder / "board.mjs")], env=env, stdout=out, stderr=out, cwd=folder)
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"Bull Board exited {proc.returncode}:\n{log.read_text()}")
            return f"listening {port}" in log.read_text()

        wait_for(listening, STARTUP_TIMEOUT, "Bull Board to listen", 0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_bull_board_lists_killsafe_failures_and_its_retry_is_processed_by_the_reference_worker(
    module_redis: RedisServer, rds: redis.Redis, module_workers: WorkerFactory, bull_board: str
) -> None:
    module_workers.start(queues=QUEUE, env=handler_worker_env())
    enqueue_many(module_redis.url, [("echo", {"hello": "board"}, {"jobId": "bb-ok"})], QUEUE)
    fail_during_outage(
        rds, module_redis.url, [("send_email", "bb-1", {"to": "x@example.invalid"}), ("send_email", "bb-2", {})]
    )
    wait_for(lambda: job_state(rds, "bb-ok") == "completed", 30, "bb-ok to complete")

    status, board = api("GET", f"{bull_board}/api/queues?activeQueue={QUEUE}&status=failed&page=1&jobsPerPage=50")
    assert status == 200, board
    (queue,) = [q for q in board["queues"] if q["name"] == QUEUE]
    assert queue["counts"]["failed"] == 2 and queue["counts"]["completed"] == 1
    listed = {job["id"]: job for job in queue["jobs"]}
    assert sorted(listed) == ["bb-1", "bb-2"]
    for job in listed.values():
        assert job["failedReason"] == (
            "SMTP 421 mail.example.invalid: service not available, closing transmission channel"
        )
        assert job["isFailed"] is True and "SmtpUnavailable" in job["stacktrace"][0]
        assert job["attempts"] == 1 and job["name"] == "send_email"

    status, _ = api("PUT", f"{bull_board}/api/queues/{QUEUE}/bb-1/retry")

    assert status == 204
    wait_for(lambda: job_state(rds, "bb-1") == "completed", 30, "the reference worker to complete bb-1")
    assert json.loads(rds.hget(f"bull:{QUEUE}:bb-1", "returnvalue") or "{}")["sent"] is True
    assert rds.hget(f"bull:{QUEUE}:bb-1", "atm") == "2", "Bull Board's retry keeps attemptsMade (one more attempt)"
    assert job_state(rds, "bb-2") == "failed"
    status, board = api("GET", f"{bull_board}/api/queues?activeQueue={QUEUE}&status=completed&page=1&jobsPerPage=50")
    (queue,) = [q for q in board["queues"] if q["name"] == QUEUE]
    assert sorted(job["id"] for job in queue["jobs"]) == ["bb-1", "bb-ok"]
    assert not [r for r in audit_records(rds) if r["job_id"] == "bb-1"], "Bull Board's retry is not audited"


def test_bull_board_sees_the_reference_worker(module_workers: WorkerFactory, bull_board: str) -> None:
    running = [w for w in module_workers.started if w.proc.poll() is None]
    worker = running[0] if running else module_workers.start(queues=QUEUE, env=handler_worker_env())
    status, answer = api("GET", f"{bull_board}/api/queues/{QUEUE}/workers")
    assert status == 200
    # Bull Board lists each connection named like a Node worker (adapter B8), by the worker's own name.
    names = [str(client.get("name", "")) for client in answer["workers"]]
    assert f"{socket.gethostname()}:{worker.pid}" in names, answer
