"""Redis refusing rather than failing: out of memory (item 4), a missing ACL permission (item 8) and
a rotated password (issue 7, item 7), each against a real redis-server and a real worker."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import redis

from killsafe_worker import contract
from tests.conftest import RedisServer
from tests.worker.conftest import (
    TEST_PASSWORD,
    AuthRedisServer,
    WorkerFactory,
    WorkerProcess,
    client,
    enqueue,
    enqueue_many,
    job_state,
    side_effects,
    wait_for,
)

FILLER_BYTES = 256 * 1024


def fill_until_out_of_memory(server: RedisServer, headroom_bytes: int = 2 * 1024 * 1024) -> list[str]:
    """Set maxmemory a little above what is used, then write until Redis refuses (noeviction). The
    limit then drops below the memory used (by less than the filler), so that Redis stays full until
    the filler is deleted: buffers flushed after the refusal would otherwise free a few writes' worth."""
    r = client(server.url)
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(used + headroom_bytes))
    keys = []
    for n in range(1000):
        try:
            r.set(f"filler:{n}", "x" * FILLER_BYTES)
        except redis.exceptions.OutOfMemoryError:
            full = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory", str(full - headroom_bytes // 2))
            return keys
        keys.append(f"filler:{n}")
    raise AssertionError("Redis never ran out of memory")


def test_redis_out_of_memory_uses_no_attempt_and_recovers_by_itself(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    worker = workers.start(concurrency=4)
    keys = [f"oom-{n}" for n in range(20)]
    enqueue_many(
        redis_server.url,
        [("sleep", {"seconds": 0.4, "idempotency_key": key}, {"jobId": key, "attempts": 1}) for key in keys],
    )
    wait_for(lambda: r.zcard("bull:jobs:completed") >= 4, 30, "the first jobs to complete")

    filler = fill_until_out_of_memory(redis_server)
    refused = time.monotonic()
    worker.wait_status(contract.READY_PATH, 503, timeout=10)
    print(f"not ready {time.monotonic() - refused:.2f} s after Redis refused writes")
    problems = json.loads(worker.get(contract.READY_PATH)[1])["problems"]
    assert any("out of memory" in problem for problem in problems), problems
    oom = {"queue": "jobs", "reason": "redis_oom"}
    wait_for(lambda: worker.metric(contract.METRIC_JOBS_INTERRUPTED, oom) >= 1, 20, "a job handed back")
    time.sleep(1.5)
    assert worker.status(contract.LIVE_PATH) == 200, "an out-of-memory Redis is not a reason to restart"
    assert r.zcard("bull:jobs:failed") == 0, "a job used up its attempt on an infrastructure fault"

    r.delete(*filler)
    freed = time.monotonic()
    worker.wait_status(contract.READY_PATH, 200, timeout=20)
    print(f"ready again {time.monotonic() - freed:.2f} s after memory was freed")
    wait_for(lambda: r.zcard("bull:jobs:completed") == len(keys), 60, "every job to complete after recovery")
    assert r.zcard("bull:jobs:failed") == 0
    effects = Counter(effect["key"] for effect in side_effects(r))
    assert set(effects) == set(keys) and set(effects.values()) == {1}, effects
    assert not [entry for entry in worker.logs() if entry["level"] == "CRITICAL"]
    assert worker.proc.poll() is None


def _acl_user(server: RedisServer, name: str, *rules: str) -> str:
    """A Redis ACL user with `rules`; returns a URL that logs in as it."""
    password = f"{name}-{TEST_PASSWORD}"
    server.cli("ACL", "SETUSER", name, "on", f">{password}", *rules)
    return f"redis://{name}:{password}@127.0.0.1:{server.port}/0"


def _exits_naming(worker: WorkerProcess, grant: str) -> list[dict[str, object]]:
    assert worker.wait_exit(timeout=60) == contract.EXIT_FAILURE
    logs = worker.logs()
    critical = [entry for entry in logs if entry["level"] == "CRITICAL"]
    assert len(critical) == 1, critical
    assert grant in str(critical[0]["msg"]), critical[0]
    noisy = [entry for entry in logs if "NOPERM" in json.dumps(entry) or "NoPermission" in json.dumps(entry)]
    assert len(noisy) <= 3, f"a permission error was logged {len(noisy)} times"
    return logs


def test_a_missing_acl_permission_is_one_line_and_exit_1(redis_server: RedisServer, workers: WorkerFactory) -> None:
    no_scripts = _acl_user(redis_server, "noscripts", "~*", "&*", "+@all", "-evalsha", "-eval")
    enqueue(redis_server.url, "echo", {})
    worker = workers.start(env={contract.ENV_REDIS_URL: no_scripts}, wait_ready=False)
    _exits_naming(worker, "+evalsha")

    queue_keys_only = _acl_user(redis_server, "queuesonly", "~bull:*", "&*", "+@all")
    worker = workers.start(env={contract.ENV_REDIS_URL: queue_keys_only}, wait_ready=False)
    logs = _exits_naming(worker, "~killsafe:*")
    assert not [entry for entry in logs if entry["msg"] == "ready"], "became ready without its registration"


def test_a_rotated_password_is_picked_up_from_the_url_file(
    redis_server: AuthRedisServer, workers: WorkerFactory, tmp_path: Path
) -> None:
    url_file = tmp_path / "secret" / "url"
    url_file.parent.mkdir()
    url_file.write_text(redis_server.url + "\n")
    worker = workers.start(env={contract.ENV_REDIS_URL_FILE: str(url_file)})
    first = enqueue(redis_server.url, "echo", {"n": 1})
    wait_for(lambda: job_state(client(redis_server.url), first) == "completed", 20, "a job before the rotation")

    rotated = f"{TEST_PASSWORD}-rotated"
    redis_server.cli("CONFIG", "SET", "requirepass", rotated)
    redis_server.password = rotated
    redis_server.cli("CLIENT", "KILL", "TYPE", "normal")  # every connection must authenticate again
    wait_for(lambda: "AuthenticationError" in worker.get(contract.READY_PATH)[1], 15, "an authentication error")
    assert worker.status(contract.READY_PATH) == 503
    assert worker.status(contract.LIVE_PATH) == 200

    staged = url_file.with_name("url.new")  # as the kubelet does: the new content appears atomically
    staged.write_text(redis_server.url + "\n")
    staged.replace(url_file)
    updated = time.monotonic()
    worker.wait_status(contract.READY_PATH, 200, timeout=20)
    print(f"ready {time.monotonic() - updated:.2f} s after the URL file got the new password")
    second = enqueue(redis_server.url, "echo", {"n": 2})
    wait_for(lambda: job_state(client(redis_server.url), second) == "completed", 20, "a job after the rotation")
    assert any(entry["msg"].startswith("the Redis URL file has new credentials") for entry in worker.logs())


def test_a_permission_revoked_while_running_is_not_ready_at_once_then_exit_1(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    """The ACL loses EVALSHA under a running worker that holds a job: /readyz turns 503 naming the grant
    while the worker is still alive and draining (it is not left ready), then one CRITICAL line and exit 1."""
    user = _acl_user(redis_server, "revoked", "~*", "&*", "+@all")
    worker = workers.start(env={contract.ENV_REDIS_URL: user, contract.ENV_LOCK_DURATION_MS: "2000"})
    holding = enqueue(redis_server.url, "sleep", {"seconds": 6})
    wait_for(lambda: job_state(client(redis_server.url), holding) == "active", 20, "the slow job to start")

    redis_server.cli("ACL", "SETUSER", "revoked", "-evalsha", "-eval")  # lock renewals now fail with NOPERM
    revoked = time.monotonic()
    seen: list[tuple[int, str]] = []
    while worker.proc.poll() is None and time.monotonic() - revoked < 30:
        try:
            status, body = worker.get(contract.READY_PATH)
        except OSError:
            break  # exited between poll() and the request
        seen.append((status, body))
        if status == 503:
            break
        time.sleep(0.1)
    assert seen and seen[-1][0] == 503, f"never not-ready after the revocation: {seen[-3:]}"
    assert "+evalsha" in seen[-1][1], seen[-1][1]
    print(f"not ready {time.monotonic() - revoked:.2f} s after EVALSHA was revoked (lock renewal every 1 s)")
    assert worker.proc.poll() is None, "not ready should come before the exit, while the job drains"
    _exits_naming(worker, "+evalsha")
