"""Secrets, children and sockets: the Redis credentials never reach a log line (item 11) or a child
process (item 10), a bad URL is one line and exit 2 (item 12), children die with a SIGKILLed worker
(item 10), and both the health server and the web app answer on IPv4 and IPv6 (item 18)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from killsafe_worker import contract
from killsafe_worker.config import SettingsError, load_worker_settings, redact_url, url_secrets
from killsafe_worker.logs import JsonFormatter
from tests.conftest import REPO, RedisServer, free_port
from tests.worker.conftest import (
    TEST_PASSWORD,
    WORKER_BIN,
    WorkerFactory,
    capture_output,
    client,
    enqueue,
    http_get,
    job_state,
    wait_for,
)
from tests.worker.test_cpu_sandbox import alive, child_pid_of
from tests.worker.test_web import call, start_web

PW = TEST_PASSWORD


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PW}@redis:6379/0", "redis://***@redis:6379/0"),
        (f"rediss://worker:{PW}@redis:6380/2", "rediss://***@redis:6380/2"),
        (f"redis://redis:6379/0?password={PW}", "redis://redis:6379/0?password=***"),
        (f"redis://redis:6379/0?username=worker&password={PW}&ssl_cert_reqs=none", None),
        (f"unix://:{PW}@/run/redis.sock?db=1", "unix://***@/run/redis.sock?db=1"),
        (f"redis://[::1:{PW}", "<unparseable URL, redacted>"),
        (f"redis://:{PW}@redis:99999/0", "<unparseable URL, redacted>"),
    ],
)
def test_every_credential_form_is_redacted(url: str, shown: str | None) -> None:
    redacted = redact_url(url)
    assert PW not in redacted
    if shown is not None:
        assert redacted == shown
    assert PW in url_secrets(url) or "[" in url


@pytest.mark.parametrize(
    "url",
    [
        f"foo://{PW}",  # a bad scheme and no @: was echoed verbatim
        f"{PW}",
        f"http://:{PW}@redis:6379",
        f"redis://[::1:{PW}",
        f"redis://:{PW}@redis:99999/0",  # item 12: a bad port
        f"redis://:{PW}@redis:port/0",
        f"redis://:{PW}@redis:6379/zero",
        f"redis://:{PW}@:6379/0",
    ],
)
def test_a_bad_redis_url_is_one_line_exit_2_without_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_worker_settings({contract.ENV_REDIS_URL: url})
    assert PW not in str(raised.value) and contract.ENV_REDIS_URL in str(raised.value)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KILLSAFE_", "REDIS_"))}
    result = subprocess.run(
        [str(WORKER_BIN)], env={**env, contract.ENV_REDIS_URL: url}, capture_output=True, text=True, timeout=60
    )
    capture_output(f"killsafe-worker with {redact_url(url)}", result.stdout, result.stderr)
    assert result.returncode == contract.EXIT_USAGE
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert PW not in result.stderr


def test_the_log_formatter_scrubs_the_secrets_whatever_logged_them() -> None:
    record = logging.LogRecord("user", logging.WARNING, __file__, 1, "connecting to %s", (f"redis://:{PW}@x",), None)
    record.detail = {"url": f"redis://x/0?password={PW}"}
    line = JsonFormatter(url_secrets(f"redis://:{PW}@x")).format(record)
    assert PW not in line and line.count("***") == 2, line
    json.loads(line)
    assert JsonFormatter(["ab"]).format(record).count("***") == 0, "too short to scrub safely"


def test_a_query_parameter_password_is_redacted_in_every_worker_line(redis_server: RedisServer, workers: WorkerFactory):
    query_url = f"redis://127.0.0.1:{redis_server.port}/0?password={PW}"
    handlers = {
        contract.ENV_HANDLERS: "tests.worker.stubborn_handlers:HANDLERS",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    worker = workers.start(env={contract.ENV_REDIS_URL: query_url, **handlers})
    started = next(entry for entry in worker.logs() if entry["msg"] == "worker started")
    assert started["redis"] == f"redis://127.0.0.1:{redis_server.port}/0?password=***"
    job = enqueue(redis_server.url, "leaky", {"url": query_url})
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "the leaky job")
    leaked = worker.wait_log(lambda e: e["msg"].startswith("connecting to"), 10, "the handler's own line")
    assert leaked["msg"] == f"connecting to redis://127.0.0.1:{redis_server.port}/0?password=***"

    redis_server.stop()  # the lines logged while Redis is unreachable, too
    worker.wait_status(contract.READY_PATH, 503, timeout=15)
    worker.send(signal.SIGTERM)
    worker.wait_exit(timeout=30)
    assert PW not in worker.log_text()


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children_of(pid: int) -> list[int]:
    """Children started by any thread of `pid` (the sandbox starts its fork server from a thread)."""
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def test_children_die_with_a_sigkilled_worker_and_never_see_the_credentials(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    worker = workers.start()
    job = enqueue(redis_server.url, "cpu", {"seconds": 120})
    child = child_pid_of(worker, job)
    fork_server = _parent_of(child)
    tree = {child, fork_server, *_children_of(worker.pid)}
    assert len(tree) >= 3, f"expected a job child, the fork server and the resource tracker: {tree}"
    for pid in tree:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"REDIS_URL" not in environ and PW.encode() not in environ, f"pid {pid} inherited the credentials"

    worker.send(signal.SIGKILL)
    worker.wait_exit(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in tree), 15, f"the worker's children {sorted(tree)} to die")


def _both_families(port: int, path: str) -> list[int]:
    return [http_get(f"http://{host}:{port}{path}")[0] for host in ("127.0.0.1", "[::1]")]


def test_the_health_server_and_the_web_app_listen_on_ipv4_and_ipv6(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start()
    assert _both_families(worker.port, contract.LIVE_PATH) == [200, 200]
    assert _both_families(worker.port, contract.READY_PATH) == [200, 200]
    web = start_web(redis_server.url)
    try:
        assert _both_families(web.port, contract.LIVE_PATH) == [200, 200]
        status, body = call("POST", f"http://[::1]:{web.port}/jobs", {"name": "echo", "data": {"via": "ipv6"}})
        assert status == 202, body
        wait_for(lambda: job_state(client(redis_server.url), body["id"], "web-test") == "waiting", 10, "the job")
    finally:
        web.stop()
    assert free_port()  # (the ports were released)
