"""The dead-letter workflow against a real redis-server, with jobs failed by a real bullmq Worker.

`dlq.main` runs in-process for most tests (its output is captured); one test goes through the
installed `killsafe-worker dlq` console script to prove the wiring.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from bullmq import Queue, Worker

from killsafe_worker import contract, dlq
from tests.conftest import RedisServer
from tests.worker.conftest import capture_output

QUEUE = "dlq-test"
OTHER_QUEUE = "dlq-other"
WORKER_BIN = Path(sys.executable).with_name("killsafe-worker")


async def _add(url: str, queue: str, jobs: list[tuple[str, str, int]]) -> None:
    q = Queue(queue, {"connection": url})
    try:
        for name, job_id, attempts in jobs:
            await q.add(name, {"for": job_id}, {"jobId": job_id, "attempts": attempts, "removeOnFail": False})
    finally:
        await q.close()


async def _work_until_all_failed(url: str, queue: str) -> Counter[str]:
    """Run a real Worker whose processor always raises until nothing is waiting, active or delayed."""
    calls: Counter[str] = Counter()

    async def process(job: Any, _token: str) -> Any:
        calls[job.id] += 1
        raise RuntimeError(f"boom in {job.name}, run {calls[job.id]}")

    q = Queue(queue, {"connection": url})
    worker = Worker(queue, process, {"connection": url})
    try:
        deadline = time.monotonic() + 30
        while await q.getJobCountByTypes("waiting", "active", "delayed", "prioritized") > 0:
            assert time.monotonic() < deadline, "the worker did not fail the jobs in time"
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
        await q.close()
    return calls


def fail_jobs(url: str, jobs: list[tuple[str, str, int]], queue: str = QUEUE) -> Counter[str]:
    """Add (name, id, attempts) jobs and let a real worker exhaust their attempts; returns runs per job."""
    asyncio.run(_add(url, queue, jobs))
    return asyncio.run(_work_until_all_failed(url, queue))


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    return {
        contract.ENV_REDIS_URL: redis_server.url,
        contract.ENV_QUEUES: QUEUE,
        contract.ENV_NEVER_AUTO_RETRY: " charge, refund ",
    }


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def run_dlq(capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = dlq.main(list(argv), environ=env)
    out, err = capsys.readouterr()
    capture_output(f"dlq {' '.join(argv)}", out, err)
    return code, out, err


def job_hash(rds: redis.Redis, job_id: str, queue: str = QUEUE) -> dict[str, str]:
    return {str(key): str(value) for key, value in rds.hgetall(f"bull:{queue}:{job_id}").items()}


def failed_ids(rds: redis.Redis, queue: str = QUEUE) -> list[str]:
    return sorted(str(member) for member in rds.zrange(f"bull:{queue}:failed", 0, -1))


def audit_records(rds: redis.Redis) -> list[dict[str, str]]:
    entries = rds.xrange(contract.DLQ_AUDIT_STREAM) or []
    return [{str(key): str(value) for key, value in (fields or {}).items()} for _, fields in entries]


def test_list_and_show_failed_jobs(
    redis_server: RedisServer, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs(redis_server.url, [("echo", "e-1", 2), ("charge", "c-1", 1)])

    code, out, _ = run_dlq(capsys, env, "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "ATTEMPTS", "FINISHED", "FAILED", "REASON"]
    assert sorted(row.split()[:3] for row in rows) == [["c-1", "charge", "1"], ["e-1", "echo", "2"]]
    assert "boom in echo, run 2" in out

    code, out, _ = run_dlq(capsys, env, "list", "--json")
    listing = json.loads(out)
    assert code == 0 and listing["total"] == 2 and listing["queue"] == QUEUE
    by_id = {job["id"]: job for job in listing["jobs"]}
    assert by_id["e-1"]["attemptsMade"] == 2
    assert by_id["e-1"]["failedReason"] == "boom in echo, run 2"
    assert isinstance(by_id["e-1"]["finishedOn"], int)

    code, out, _ = run_dlq(capsys, env, "show", "e-1")
    assert code == 0
    assert "failed reason: boom in echo, run 2" in out
    assert "attempts made: 2 of 2" in out
    assert "--- stacktrace 2 of 2 ---" in out and "RuntimeError: boom in echo, run 2" in out

    shown = json.loads(run_dlq(capsys, env, "show", "c-1", "--json")[1])
    assert (shown["state"], shown["name"], shown["data"]) == ("failed", "charge", {"for": "c-1"})
    assert len(shown["stacktrace"]) == 1

    code, _, err = run_dlq(capsys, env, "show", "nope")
    assert code == 1 and err.strip() == f"killsafe-worker dlq: job nope not found in queue {QUEUE}"


def test_retry_grants_full_attempts_again_and_is_audited(
    redis_server: RedisServer, env: dict[str, str], rds: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    first_runs = fail_jobs(redis_server.url, [("echo", "e-1", 3)])
    assert first_runs["e-1"] == 3 and job_hash(rds, "e-1")["atm"] == "3"

    code, out, _ = run_dlq(capsys, env, "retry", "e-1", "--by", "alice", "--reason", "SMTP fixed (INC-42)")

    assert code == 0 and out.startswith("retried job e-1 (echo) with 3 attempts")
    assert "atm" not in job_hash(rds, "e-1"), "attemptsMade must be reset"
    assert rds.lrange(f"bull:{QUEUE}:wait", 0, -1) == ["e-1"]
    second_runs = asyncio.run(_work_until_all_failed(redis_server.url, QUEUE))
    assert second_runs["e-1"] == 3, "the retried job must get all its attempts again, not one"
    assert failed_ids(rds) == ["e-1"]

    (record,) = audit_records(rds)
    assert {key: record[key] for key in record if key not in ("at", "os_user", "host")} == {
        "by": "alice",
        "reason": "SMTP fixed (INC-42)",
        "command": "retry",
        "queue": QUEUE,
        "job_id": "e-1",
        "job_name": "echo",
        "previous_failed_reason": "boom in echo, run 3",
        "previous_attempts_made": "3",
        "attempts_granted": "3",
        "confirmed": "false",
    }
    assert datetime.fromisoformat(record["at"].replace("Z", "+00:00")).tzinfo is not None
    assert record["os_user"] and record["host"]


def test_bullmq_retry_jobs_grants_one_attempt_only(redis_server: RedisServer, rds: redis.Redis) -> None:
    """Why dlq retries job by job: the library's bulk Queue.retryJobs keeps attemptsMade (bullmq 3.4.4)."""
    fail_jobs(redis_server.url, [("echo", "e-1", 3)])

    async def bulk_retry() -> None:
        queue = Queue(QUEUE, {"connection": redis_server.url})
        try:
            await queue.retryJobs({"state": "failed"})
        finally:
            await queue.close()

    asyncio.run(bulk_retry())
    runs = asyncio.run(_work_until_all_failed(redis_server.url, QUEUE))

    assert runs["e-1"] == 1
    assert job_hash(rds, "e-1")["atm"] == "4"


def test_a_retry_resets_the_stall_counter(
    redis_server: RedisServer, env: dict[str, str], rds: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job failed for stalling keeps bullmq's `stc` count; left alone, its first new stall would fail it."""
    fail_jobs(redis_server.url, [("echo", "e-1", 1)])
    rds.hset(f"bull:{QUEUE}:e-1", "stc", "2")  # what moveStalledJobsToWait leaves after two stalls

    assert run_dlq(capsys, env, "retry", "e-1", "--by", "alice", "--reason", "OOM fixed")[0] == 0

    assert "stc" not in job_hash(rds, "e-1")


def test_never_auto_retry_jobs_need_confirm(
    redis_server: RedisServer, env: dict[str, str], rds: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs(redis_server.url, [("charge", "c-1", 1)])
    before = job_hash(rds, "c-1")

    code, out, err = run_dlq(capsys, env, "retry", "c-1", "--by", "alice", "--reason", "card fixed")

    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert "refusing to retry job c-1: 'charge' is in KILLSAFE_NEVER_AUTO_RETRY" in err and "--confirm" in err
    assert job_hash(rds, "c-1") == before and failed_ids(rds) == ["c-1"]
    assert not rds.exists(contract.DLQ_AUDIT_STREAM)

    code, _, _ = run_dlq(
        capsys, env, "retry", "c-1", "--by", "alice", "--reason", "checked PSP: not charged", "--confirm"
    )

    assert code == 0 and failed_ids(rds) == []
    (record,) = audit_records(rds)
    assert (record["job_name"], record["confirmed"], record["reason"]) == ("charge", "true", "checked PSP: not charged")


def test_retry_all_skips_never_auto_retry_names(
    redis_server: RedisServer, env: dict[str, str], rds: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs(redis_server.url, [("echo", "e-1", 1), ("echo", "e-2", 2), ("charge", "c-1", 1), ("refund", "r-1", 1)])

    code, out, _ = run_dlq(capsys, env, "retry-all", "--by", "bob", "--reason", "deploy 1.4.2", "--json")

    assert code == 0
    result = json.loads(out)
    assert sorted(job["id"] for job in result["retried"]) == ["e-1", "e-2"]
    assert sorted(job["id"] for job in result["skipped"]) == ["c-1", "r-1"]
    assert failed_ids(rds) == ["c-1", "r-1"]
    assert sorted(rds.lrange(f"bull:{QUEUE}:wait", 0, -1)) == ["e-1", "e-2"]
    records = audit_records(rds)
    assert sorted(r["job_id"] for r in records) == ["e-1", "e-2"]
    assert {(r["command"], r["by"], r["reason"]) for r in records} == {("retry-all", "bob", "deploy 1.4.2")}

    code, out, err = run_dlq(capsys, env, "retry-all", "--by", "bob", "--reason", "again")
    assert code == 1
    assert "skipped c-1 (charge)" in out and "skipped r-1 (refund)" in out
    assert "nothing to retry" in err


def test_dry_run_changes_nothing(
    redis_server: RedisServer, env: dict[str, str], rds: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs(redis_server.url, [("echo", "e-1", 2), ("charge", "c-1", 1)])
    snapshot = {job_id: job_hash(rds, job_id) for job_id in ("e-1", "c-1")}

    code, out, _ = run_dlq(capsys, env, "retry", "e-1", "--by", "a", "--reason", "r", "--dry-run")
    assert code == 0 and out.startswith("dry run: would retry job e-1 (echo)")
    code, out, _ = run_dlq(capsys, env, "retry-all", "--by", "a", "--reason", "r", "--dry-run", "--json")
    assert code == 0
    preview = json.loads(out)
    assert preview["dryRun"] is True
    assert [job["id"] for job in preview["wouldRetry"]] == ["e-1"]
    assert [job["id"] for job in preview["skipped"]] == ["c-1"]

    assert {job_id: job_hash(rds, job_id) for job_id in ("e-1", "c-1")} == snapshot
    assert failed_ids(rds) == ["c-1", "e-1"]
    assert rds.llen(f"bull:{QUEUE}:wait") == 0
    assert not rds.exists(contract.DLQ_AUDIT_STREAM), "a dry run writes no audit record"


def test_usage_errors_exit_2_and_nothing_to_do_exits_1(
    redis_server: RedisServer, env: dict[str, str], rds: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs(redis_server.url, [("echo", "e-1", 1)])

    assert run_dlq(capsys, env, "retry", "e-1", "--reason", "no author")[0] == 2
    assert run_dlq(capsys, env, "retry", "e-1", "--by", "a")[0] == 2
    code, _, err = run_dlq(capsys, env, "retry", "e-1", "--by", "  ", "--reason", "r")
    assert code == 2 and "--by must not be blank" in err
    assert run_dlq(capsys, env, "retry-all", "--by", "a", "--reason", "r", "--confirm")[0] == 2
    assert run_dlq(capsys, env, "frobnicate")[0] == 2
    assert run_dlq(capsys, env, "list", "--queue", "bad queue!")[0] == 2
    code, _, err = run_dlq(capsys, {**env, contract.ENV_QUEUES: f"{QUEUE},{OTHER_QUEUE}"}, "list")
    assert code == 2 and "choose one with --queue" in err
    assert failed_ids(rds) == ["e-1"], "usage errors must not retry anything"

    assert run_dlq(capsys, env, "retry", "e-1", "--by", "a", "--reason", "r")[0] == 0
    code, _, err = run_dlq(capsys, env, "retry", "e-1", "--by", "a", "--reason", "r")
    assert code == 1 and "job e-1 is waiting, not failed: nothing to retry" in err
    assert run_dlq(capsys, env, "retry", "ghost", "--by", "a", "--reason", "r")[0] == 1
    assert run_dlq(capsys, env, "retry-all", "--by", "a", "--reason", "r")[0] == 1
    assert len(audit_records(rds)) == 1


def test_audit_lists_newest_first_and_filters_by_queue(
    redis_server: RedisServer, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fail_jobs(redis_server.url, [("echo", "a-1", 1), ("echo", "a-2", 1)])
    fail_jobs(redis_server.url, [("echo", "b-1", 1)], queue=OTHER_QUEUE)
    for job_id in ("a-1", "a-2"):
        assert run_dlq(capsys, env, "retry", job_id, "--by", "carol", "--reason", f"why {job_id}")[0] == 0
    assert run_dlq(capsys, env, "retry", "b-1", "--queue", OTHER_QUEUE, "--by", "dan", "--reason", "why b")[0] == 0

    code, out, _ = run_dlq(capsys, env, "audit", "--json")
    assert code == 0
    assert [record["job_id"] for record in json.loads(out)] == ["b-1", "a-2", "a-1"]

    filtered = json.loads(run_dlq(capsys, env, "audit", "--queue", QUEUE, "--json", "--limit", "1")[1])
    assert [(record["job_id"], record["queue"]) for record in filtered] == [("a-2", QUEUE)]

    code, out, _ = run_dlq(capsys, env, "audit", "--queue", OTHER_QUEUE)
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:3] == ["AT", "BY", "QUEUE"]
    assert len(rows) == 1 and "dan" in rows[0] and "why b" in rows[0]


def test_redis_unreachable_is_one_line_and_exit_1(
    redis_server: RedisServer, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    redis_server.stop()

    code, out, err = run_dlq(capsys, env, "list")

    assert code == 1 and out == ""
    assert err.startswith("killsafe-worker dlq: Redis error: ") and err.count("\n") == 1


def test_the_worker_cli_dispatches_dlq(redis_server: RedisServer, env: dict[str, str]) -> None:
    if not WORKER_BIN.exists():
        pytest.fail(f"{WORKER_BIN} is missing: run `bash .ci/bootstrap` to install the console scripts")
    fail_jobs(redis_server.url, [("echo", "e-1", 1)])
    full_env = {**os.environ, **env}
    full_env.pop(contract.ENV_REDIS_URL_FILE, None)

    listed = subprocess.run(
        [str(WORKER_BIN), "dlq", "list", "--json"],
        check=False,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)["jobs"]] == ["e-1"]

    usage = subprocess.run(
        [str(WORKER_BIN), "dlq", "retry", "e-1"], check=False, env=full_env, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "--by" in usage.stderr
