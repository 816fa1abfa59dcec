"""/readyz, /livez, /metrics and `killsafe-worker healthcheck` against a real worker and real Redis states."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CONTENT_TYPE_LATEST

from killsafe_worker import contract
from killsafe_worker.health import (
    MAX_REQUEST_HEAD_BYTES,
    READ_TIMEOUT_SECONDS,
    HealthServer,
    HealthState,
    start_health_server,
)
from killsafe_worker.metrics import WorkerMetrics
from tests.conftest import RedisServer, free_port
from tests.worker.conftest import WORKER_BIN, WorkerFactory, WorkerProcess, client, enqueue, job_state, wait_for

STALL = 2.0
"""KILLSAFE_LIVENESS_STALL_SECONDS for these tests."""
HEALTH_ENV = {contract.ENV_LIVENESS_STALL_SECONDS: str(STALL), contract.ENV_LOCK_DURATION_MS: "4000"}


def problems(worker: WorkerProcess, path: str) -> list[str]:
    return list(json.loads(worker.get(path)[1])["problems"])


def stays(worker: WorkerProcess, path: str, status: int, seconds: float) -> None:
    """`path` answers `status` throughout `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert worker.status(path) == status, f"{path} left {status}: {problems(worker, path)}"
        time.sleep(0.2)


def healthcheck(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, contract.ENV_HEALTH_PORT: str(port)}
    return subprocess.run([str(WORKER_BIN), "healthcheck", *args], env=env, capture_output=True, text=True, timeout=30)


def test_healthy_worker_metrics_and_healthcheck_cli(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    job = enqueue(redis_server.url, "echo", {"hello": "world"})
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "an echo job")

    assert worker.status(contract.READY_PATH) == 200
    assert worker.status(contract.LIVE_PATH) == 200
    _, body = worker.get(contract.METRICS_PATH)
    for name in (
        contract.METRIC_JOBS_COMPLETED,
        contract.METRIC_JOBS_FAILED,
        contract.METRIC_JOB_DURATION + "_bucket",
        contract.METRIC_QUEUE_JOBS,
        contract.METRIC_JOBS_INTERRUPTED,
        contract.METRIC_LAST_JOB_COMPLETED,
        contract.METRIC_WORKER_READY,
    ):
        assert f"\n{name}" in body, f"{name} missing from /metrics"
    assert worker.metric(contract.METRIC_JOBS_COMPLETED, {"queue": "jobs"}) == 1.0
    assert worker.metric(contract.METRIC_WORKER_READY, {}) == 1.0
    for state in contract.QUEUE_STATES:
        worker.metric(contract.METRIC_QUEUE_JOBS, {"queue": "jobs", "state": state})
    registration = client(redis_server.url).get(f"{contract.WORKER_REGISTRY_PREFIX}{socket_name(worker)}")
    assert registration and json.loads(registration)["pid"] == worker.pid
    assert client(redis_server.url).ttl(f"{contract.WORKER_REGISTRY_PREFIX}{socket_name(worker)}") > 0

    assert healthcheck(worker.port).returncode == 0
    dead = healthcheck(free_port())
    assert dead.returncode == 1
    assert "refused" in dead.stderr.lower()


def socket_name(worker: WorkerProcess) -> str:
    started = next(entry for entry in worker.logs() if entry["msg"] == "worker started")
    return str(started["workerId"])


def test_redis_outage_fails_readiness_not_liveness(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    enqueue(redis_server.url, "sleep", {"seconds": 60})  # keeps the slot busy: the backlog below is real
    enqueue(redis_server.url, "echo", {})

    redis_server.stop()
    worker.wait_status(contract.READY_PATH, 503, timeout=15)
    assert any("redis" in problem for problem in problems(worker, contract.READY_PATH))
    stays(worker, contract.LIVE_PATH, 200, STALL + 3)  # an outage is not a reason to restart
    assert healthcheck(worker.port, "--probe", "live").returncode == 0
    assert healthcheck(worker.port).returncode == 1

    redis_server.start()
    worker.wait_status(contract.READY_PATH, 200, timeout=20)
    assert worker.proc.poll() is None
    # The running job's lock expired during the outage (4 s lock): counted as a casualty.
    lock_lost = {"queue": "jobs", "reason": "lock_lost"}
    wait_for(lambda: worker.metric(contract.METRIC_JOBS_INTERRUPTED, lock_lost) == 1, 10, "lock_lost == 1")


def test_evicting_redis_is_refused(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    worker.wait_status(contract.READY_PATH, 503, timeout=15)
    assert any("allkeys-lru" in problem for problem in problems(worker, contract.READY_PATH))
    refusal = worker.wait_log(lambda e: e["msg"].startswith("refusing to process jobs"), 5, "a refusal log line")
    assert refusal["level"] == "ERROR" and refusal["policy"] == "allkeys-lru"

    job = enqueue(redis_server.url, "echo", {})
    stays(worker, contract.LIVE_PATH, 200, STALL + 2)  # refusing on purpose is not a stall
    assert job_state(client(redis_server.url), job) == "waiting", "a job was claimed from an evicting Redis"

    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    worker.wait_status(contract.READY_PATH, 200, timeout=15)
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "the job once Redis is safe")


def test_liveness_ignores_paused_queues_and_busy_slots_but_catches_a_real_stall(
    redis_server: RedisServer, workers: WorkerFactory
):
    r = client(redis_server.url)
    worker = workers.start(env=HEALTH_ENV)

    # A paused queue holds jobs back on purpose: not a stall.
    r.hset("bull:jobs:meta", "paused", 1)
    held = enqueue(redis_server.url, "echo", {})
    stays(worker, contract.LIVE_PATH, 200, STALL + 3)
    assert job_state(r, held) == "waiting"

    # Writes paused while a job waits and a slot is free: the worker cannot claim anything. The queue
    # is resumed without a wake-up marker (and writes paused in the same round trip), so the worker
    # only tries to claim when its blocking wait times out, and that claim is what the pause blocks.
    # (Not in MULTI: Redis 7.0 asserts when a transaction with CLIENT PAUSE unblocks a client.)
    with r.pipeline(transaction=False) as pipe:
        pipe.hdel("bull:jobs:meta", "paused")
        pipe.execute_command("CLIENT", "PAUSE", "12000", "WRITE")
        pipe.execute()
    worker.wait_status(contract.LIVE_PATH, 503, timeout=STALL + 8)
    assert any("none processed" in problem for problem in problems(worker, contract.LIVE_PATH))
    redis_server.cli("CLIENT", "UNPAUSE")
    wait_for(lambda: job_state(r, held) == "completed", 20, "the held job once writes resume")
    worker.wait_status(contract.LIVE_PATH, 200, timeout=10)

    # Every slot busy with a long job while more wait: not a stall either.
    enqueue(redis_server.url, "sleep", {"seconds": STALL + 4})
    wait_for(lambda: r.llen("bull:jobs:active") == 1, 10, "the long job to start")
    enqueue(redis_server.url, "echo", {})
    stays(worker, contract.LIVE_PATH, 200, STALL + 2)


def test_stuck_event_loop_fails_liveness(redis_server: RedisServer, workers: WorkerFactory):
    worker = workers.start(env=HEALTH_ENV)
    worker.send(signal.SIGSTOP)  # nothing on the loop runs: the probe itself must time out
    try:
        stuck = healthcheck(worker.port, "--probe", "live", "--timeout", "1")
        assert stuck.returncode == 1
        assert "timed out" in stuck.stderr
        time.sleep(2.5)
    finally:
        worker.send(signal.SIGCONT)
    status, body = worker.get(contract.LIVE_PATH)
    assert status == 503, body
    assert "event loop" in body
    job = enqueue(redis_server.url, "echo", {})  # the loop runs again: jobs are processed
    wait_for(lambda: job_state(client(redis_server.url), job) == "completed", 20, "a job after the stall")


@pytest.fixture(autouse=True)
def _never_leave_redis_paused(redis_server: RedisServer):
    yield
    with contextlib.suppress(subprocess.CalledProcessError, redis.RedisError):
        redis_server.cli("CLIENT", "UNPAUSE")


# --- the HTTP server itself: real sockets against a HealthServer on its own event loop thread ----------

AIOHTTP_FAMILY = ("aiohttp", "multidict", "yarl")
"""aiohttp and the C-extension packages only it pulls in: none may be loaded by the worker."""


@dataclass
class InProcessHealth:
    """A real HealthServer on 127.0.0.1, its loop in a thread, so tests talk to it with plain sockets."""

    port: int
    state: HealthState
    server: HealthServer
    loop: asyncio.AbstractEventLoop
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    """Everything asyncio reported to the loop's exception handler (tracebacks that would be logged)."""

    def request(self, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """Send `raw`, read until the server closes; (status, headers, body)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(raw)
            answer = read_until_closed(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in header_lines)}
        return int(status_line.split(" ")[1]), headers, body

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def uvloop_event_loop() -> asyncio.AbstractEventLoop:
    uvloop = pytest.importorskip("uvloop")
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@pytest.fixture(params=[asyncio.new_event_loop, uvloop_event_loop], ids=["asyncio", "uvloop"])
def health_server(request: pytest.FixtureRequest) -> Iterator[InProcessHealth]:
    """On both loops: the worker runs on uvloop when it is installed (the image has it), else asyncio's."""
    loop = request.param()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state = HealthState(queues={}, liveness_stall_seconds=60.0, loop_lag_limit_seconds=3600.0)
    port = free_port()
    starting = start_health_server(state, WorkerMetrics([]), port, hosts=("127.0.0.1",))
    server = asyncio.run_coroutine_threadsafe(starting, loop).result(timeout=10)
    running = InProcessHealth(port, state, server, loop)
    loop.set_exception_handler(lambda _, context: running.loop_errors.append(context))
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(server.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_probe_answers_match_the_state(health_server: InProcessHealth) -> None:
    status, headers, body = health_server.get(contract.READY_PATH)
    assert (status, headers["content-type"]) == (503, "application/json; charset=utf-8")
    assert json.loads(body) == {
        "ready": False,
        "problems": ["starting", "redis: not checked yet", "worker registration heartbeat is stale"],
    }
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)

    health_server.state.started = True
    health_server.state.redis_error = None
    health_server.state.registered_at = time.monotonic()
    assert json.loads(health_server.get(contract.READY_PATH)[2]) == {"ready": True, "problems": []}
    assert health_server.get(contract.READY_PATH + "?verbose=1")[0] == 200  # the query is not part of the path
    status, _, body = health_server.get(contract.LIVE_PATH)
    assert (status, json.loads(body)) == (200, {"live": True, "problems": []})
    status, headers, body = health_server.get(contract.METRICS_PATH)
    assert (status, headers["content-type"]) == (200, CONTENT_TYPE_LATEST)
    assert f"\n{contract.METRIC_WORKER_READY} 1.0\n".encode() in body


def test_unknown_paths_are_404_and_other_methods_405(health_server: InProcessHealth) -> None:
    status, _, body = health_server.get("/")
    assert (status, body) == (404, b"404: Not Found")
    assert health_server.get(contract.READY_PATH + "/extra")[0] == 404
    assert health_server.request(b"POST /nowhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n")[0] == 404
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, body = health_server.request(f"{method} {contract.LIVE_PATH} HTTP/1.1\r\n\r\n".encode())
        assert (status, body) == (405, b"405: Method Not Allowed"), method
        assert headers["allow"] == "GET, HEAD"

    status, headers, body = health_server.request(f"HEAD {contract.READY_PATH} HTTP/1.0\r\n\r\n".encode())
    assert (status, body) == (503, b"")
    assert int(headers["content-length"]) == len(health_server.get(contract.READY_PATH)[2])


def test_garbage_and_oversized_requests_are_refused(health_server: InProcessHealth) -> None:
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\r\n\r\n"
    assert health_server.request(tls_hello)[0] == 400
    assert health_server.request(b"GET\r\n\r\n")[0] == 400
    assert health_server.request(b"GET readyz HTTP/1.1\r\n\r\n")[0] == 400
    assert health_server.request(b"GET /readyz HTTP/2.0\r\n\r\n")[0] == 505

    huge_header = b"X-Padding: " + b"a" * (4 * MAX_REQUEST_HEAD_BYTES) + b"\r\n"
    oversized = f"GET {contract.LIVE_PATH} HTTP/1.1\r\n".encode() + huge_header + b"\r\n"
    status, _, body = health_server.request(oversized)
    assert (status, body) == (431, b"431: Request Header Fields Too Large")
    never_ending = f"GET {contract.LIVE_PATH} HTTP/1.1\r\n".encode() + huge_header  # no blank line
    assert health_server.request(never_ending)[0] == 431

    assert health_server.get(contract.LIVE_PATH)[0] == 200
    assert health_server.loop_errors == []


def test_silent_client_is_dropped_after_the_read_timeout_and_blocks_nobody(health_server: InProcessHealth) -> None:
    with (
        socket.create_connection(("127.0.0.1", health_server.port)) as silent,
        socket.create_connection(("127.0.0.1", health_server.port)) as slow,
    ):
        slow.sendall(f"GET {contract.LIVE_PATH} HTTP/1.1\r\n".encode())  # and never the rest
        connected = time.monotonic()
        for _ in range(5):
            assert health_server.get(contract.LIVE_PATH)[0] == 200
        for stalled in (silent, slow):
            stalled.settimeout(READ_TIMEOUT_SECONDS + 30)
            assert read_until_closed(stalled) == b"", "a stalled client got an answer"
        assert time.monotonic() - connected >= READ_TIMEOUT_SECONDS - 0.5, "dropped before the read timeout"
    assert health_server.get(contract.LIVE_PATH)[0] == 200
    assert health_server.loop_errors == []


def test_client_disconnects_leave_no_traceback(
    health_server: InProcessHealth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reset_on_close = struct.pack("ii", 1, 0)  # SO_LINGER 0: close() sends RST, as a killed client would
    for attempt in range(60):
        with socket.create_connection(("127.0.0.1", health_server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset_on_close)
            if attempt % 3:
                sock.sendall(f"GET {contract.METRICS_PATH} HTTP/1.1\r\n\r\n".encode()[: 10 * (attempt % 3)])
            if attempt % 2:
                sock.sendall(f"GET {contract.METRICS_PATH} HTTP/1.1\r\n\r\n".encode())
    assert health_server.get(contract.METRICS_PATH)[0] == 200
    time.sleep(0.5)  # the server's side of the resets is handled on its own thread
    gc.collect()  # a task that died with an unretrieved exception reports it when collected
    assert health_server.loop_errors == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []


def test_cleanup_stops_listening_and_drops_open_connections(health_server: InProcessHealth) -> None:
    with socket.create_connection(("127.0.0.1", health_server.port)) as idle:
        # A connection accepted in the very moment the server closes is asyncio's to handle, not ours.
        wait_for(lambda: health_server.server.open_connections == 1, 10, "the server to take the connection")
        asyncio.run_coroutine_threadsafe(health_server.server.cleanup(), health_server.loop).result(timeout=10)
        idle.settimeout(10)
        assert read_until_closed(idle) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", health_server.port), timeout=5).close()
    assert health_server.loop_errors == []


def test_worker_does_not_load_aiohttp(workers: WorkerFactory) -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, killsafe_worker.worker; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert not [name for name in imported if name.split(".")[0] in AIOHTTP_FAMILY]

    worker = workers.start(env=HEALTH_ENV)  # ready: every lazy import of a running worker has happened
    mapped = Path(f"/proc/{worker.pid}/maps").read_text()
    assert not [package for package in AIOHTTP_FAMILY if f"/{package}/" in mapped]
    assert worker.status("/nowhere") == 404
    assert worker.status(contract.LIVE_PATH) == 200
