"""Fixtures for the worker runtime tests: real `killsafe-worker` processes against a real redis-server.

Workers are the installed console script, started with a real environment and stopped with real
signals. Jobs are enqueued with bullmq's own Queue, and every assertion reads Redis directly.

Every Redis here requires a password (TEST_PASSWORD), and every line any worker, web or CLI process
writes during the session is collected (`capture_log_file`, `capture_output`): at the end of the
session none may contain the password, whatever form the URL took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from bullmq import Queue

from killsafe_worker import contract
from killsafe_worker.handlers import idempotency_marker_key
from tests.conftest import RedisServer, free_port, require, running

WORKER_BIN = Path(sys.executable).with_name("killsafe-worker")
STARTUP_TIMEOUT = 60.0
"""Importing bullmq + aiohttp takes seconds on a loaded 2-core CI machine."""
QUEUE = "jobs"
INHERIT_NOT = ("KILLSAFE_", "REDIS_", "NOTIFY_SOCKET", "WATCHDOG_")
"""Environment variables a test worker must not inherit from whoever runs pytest."""
TEST_PASSWORD = "ks-test-Pw-5d81c0e7a9"
"""The password of every test Redis: it must never appear in any log line of the suite."""

_captured_files: list[Path] = []
_captured_texts: list[tuple[str, str]] = []


def capture_log_file(path: Path) -> Path:
    """Register a process's log file for the end-of-session password check."""
    _captured_files.append(path)
    return path


def capture_output(what: str, *texts: str | None) -> None:
    """Register captured stdout/stderr text for the end-of-session password check."""
    _captured_texts.extend((what, text) for text in texts if text)


@pytest.fixture(scope="session", autouse=True)
def _no_password_in_any_log() -> Iterator[None]:
    """Item 11: grep everything every worker/web/CLI process of the session wrote for the password."""
    yield
    leaks = [
        f"{path}: {line[:300]}"
        for path in _captured_files
        if path.exists()
        for line in path.read_text(errors="replace").splitlines()
        if TEST_PASSWORD in line
    ]
    leaks += [
        f"{what}: {line[:300]}" for what, text in _captured_texts for line in text.splitlines() if TEST_PASSWORD in line
    ]
    if leaks:
        pytest.fail("the Redis password reached a log line:\n" + "\n".join(leaks[:20]), pytrace=False)


@dataclass
class AuthRedisServer(RedisServer):
    """A RedisServer that requires TEST_PASSWORD (`url` carries it, `cli` sends it)."""

    password: str = TEST_PASSWORD

    def __post_init__(self) -> None:
        self.extra = ("--requirepass", self.password, *self.extra)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [require("redis-cli"), "-p", str(self.port), "--no-auth-warning", "-a", self.password, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Overrides the suite's Redis for the worker tests: the same server, with a password."""
    yield from running(AuthRedisServer(tmp_path / "redis"))


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; return its value or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); HTTP errors are answers too; connection problems raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@dataclass
class WorkerProcess:
    """A running `killsafe-worker` with its health port and its JSON log (stderr) captured to a file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.port}{path}", timeout)

    def status(self, path: str) -> int | None:
        try:
            return self.get(path)[0]
        except OSError:
            return None

    def wait_status(self, path: str, expected: int, timeout: float = 30.0) -> None:
        wait_for(lambda: self.status(path) == expected, timeout, f"{path} == {expected} (worker {self.pid})", 0.1)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_text()}")
            return self.status(contract.READY_PATH) == 200

        wait_for(ready, timeout, f"worker {self.pid} ready", 0.1)

    def send(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON (a non-JSON line fails the test: logs must be JSON)."""
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"worker {self.pid} wrote a non-JSON log line: {line!r}") from None
        return parsed

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((entry for entry in self.logs() if predicate(entry)), None)

        found: dict[str, Any] = wait_for(find, timeout, what, 0.1)
        return found

    def metric(self, name: str, labels: Mapping[str, str]) -> float:
        """Value of one Prometheus sample from /metrics."""
        _, body = self.get(contract.METRICS_PATH)
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in body.splitlines():
            if not labels and line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
            if line.startswith(name + "{"):
                sample_labels = line[len(name) + 1 : line.index("}")]
                if ",".join(sorted(sample_labels.split(","))) == wanted:
                    return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no sample {name}{{{wanted}}} in /metrics:\n{body}")


@dataclass
class WorkerFactory:
    redis_server: RedisServer
    tmp_path: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(
        self,
        *,
        queues: str = QUEUE,
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
        args: tuple[str, ...] = (),
    ) -> WorkerProcess:
        port = free_port()
        log_path = capture_log_file(self.tmp_path / f"worker-{len(self.started)}.log")
        environment = {
            **{key: value for key, value in os.environ.items() if not key.startswith(INHERIT_NOT)},
            contract.ENV_REDIS_URL: self.redis_server.url,
            contract.ENV_QUEUES: queues,
            contract.ENV_CONCURRENCY_PER_QUEUE: str(concurrency),
            contract.ENV_HEALTH_PORT: str(port),
            contract.ENV_STARTUP_TIMEOUT_SECONDS: "30",
            **(env or {}),
        }
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [str(WORKER_BIN), *args], env=environment, stdout=log_file, stderr=log_file, cwd=self.tmp_path
            )
        worker = WorkerProcess(proc, port, log_path)
        self.started.append(worker)
        if wait_ready:
            worker.wait_ready()
        return worker

    def cleanup(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)
                worker.proc.kill()
                worker.proc.wait(timeout=10)


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(redis_server, tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


# --- Redis-side helpers (what the tests assert on) ------------------------------------------------


def enqueue(url: str, name: str, data: Mapping[str, Any], queue: str = QUEUE, **opts: Any) -> str:
    """Add one job with bullmq's own Queue; returns its id."""
    return enqueue_many(url, [(name, data, opts)], queue)[0]


def enqueue_many(
    url: str, jobs: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]], queue: str = QUEUE
) -> list[str]:
    async def add() -> list[str]:
        q = Queue(queue, {"connection": url})
        try:
            added = await q.addBulk(
                [{"name": name, "data": dict(data), "opts": dict(opts)} for name, data, opts in jobs]
            )
            return [str(job.id) for job in added]
        finally:
            await q.close()

    return asyncio.run(add())


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def job_state(r: redis.Redis, job_id: str, queue: str = QUEUE, key_prefix: str = "bull") -> str:
    prefix = f"{key_prefix}:{queue}"
    if r.zscore(f"{prefix}:completed", job_id) is not None:
        return "completed"
    if r.zscore(f"{prefix}:failed", job_id) is not None:
        return "failed"
    if r.zscore(f"{prefix}:delayed", job_id) is not None:
        return "delayed"
    if job_id in r.lrange(f"{prefix}:active", 0, -1):
        return "active"
    if job_id in r.lrange(f"{prefix}:wait", 0, -1):
        return "waiting"
    return "unknown"


def job_hash(r: redis.Redis, job_id: str, queue: str = QUEUE, key_prefix: str = "bull") -> dict[str, str]:
    return r.hgetall(f"{key_prefix}:{queue}:{job_id}")


def lock_holder_pid(r: redis.Redis, job_id: str, queue: str = QUEUE) -> int | None:
    """Pid of the worker process holding the job's lock, from the workers' registration heartbeats."""
    token = r.get(f"bull:{queue}:{job_id}:lock")
    if not token:
        return None
    for key in r.scan_iter(f"{contract.WORKER_REGISTRY_PREFIX}*"):
        record = json.loads(r.get(key) or "{}")
        if any(token.startswith(prefix) for prefix in record.get("lockTokenPrefixes", {}).values()):
            return int(record["pid"])
    return None


def side_effects(r: redis.Redis) -> list[dict[str, Any]]:
    """Every recorded side effect (the list is appended to only when the SET NX marker was new)."""
    return [json.loads(entry) for entry in r.lrange(contract.SIDE_EFFECTS_LIST, 0, -1)]


def marker(r: redis.Redis, key: str, queue: str = QUEUE) -> dict[str, Any] | None:
    raw = r.get(idempotency_marker_key(queue, key))
    return json.loads(raw) if raw else None
