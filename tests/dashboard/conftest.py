"""Fixtures for the dashboard tests: a real redis-server, real `killsafe-worker` and `killsafe-dashboard`
processes, and an HTTP client that signs in the way a browser does (basic auth, CSRF token from the page).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from killsafe_worker import contract
from killsafe_worker.dashboard.cli import hash_password_line
from tests.conftest import REPO, RedisServer, free_port
from tests.dashboard.handlers import OUTAGE_KEY
from tests.worker.conftest import INHERIT_NOT, STARTUP_TIMEOUT, WorkerFactory, enqueue_many, wait_for

DASHBOARD_BIN = Path(sys.executable).with_name("killsafe-dashboard")
QUEUE = "emails"
NEVER = "charge"
USERS = {
    "alice": ("operator", "alice-correct-horse"),
    "bob": ("viewer", "bob-battery-staple"),
    "carol": ("operator", "carol-second-operator"),
}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: str


@dataclass
class DashboardProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}{path}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        password: str | None = None,
        form: Mapping[str, str | list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> Answer:
        all_headers = dict(headers or {})
        if user is not None:
            secret = password if password is not None else USERS[user][1]
            all_headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.url(path, host), data=body, headers=all_headers, method=method)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=30) as response:
                return Answer(response.status, dict(response.headers), response.read().decode())
        except urllib.error.HTTPError as err:
            return Answer(err.code, dict(err.headers), err.read().decode())

    def get(self, path: str, user: str | None = "alice", **kwargs: object) -> Answer:
        return self.request("GET", path, user=user, **kwargs)  # type: ignore[arg-type]

    def csrf_token(self, path: str, user: str = "alice") -> str:
        page = self.get(path, user=user)
        assert page.status == 200, page.body
        match = CSRF_INPUT.search(page.body)
        assert match, f"no CSRF token on {path} for {user}"
        return match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def write_credentials(path: Path, users: Mapping[str, tuple[str, str]] = USERS) -> Path:
    lines = ["# killsafe dashboard users (test)"]
    lines += [hash_password_line(name, role, password) for name, (role, password) in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DashboardFactory:
    redis_url: str
    workdir: Path
    credentials: Path
    started: list[DashboardProcess] = field(default_factory=list)

    def environment(self, env: Mapping[str, str] | None = None, port: int | None = None) -> dict[str, str]:
        return {
            **{key: value for key, value in os.environ.items() if not key.startswith(INHERIT_NOT)},
            contract.ENV_REDIS_URL: self.redis_url,
            contract.ENV_QUEUES: QUEUE,
            contract.ENV_NEVER_AUTO_RETRY: NEVER,
            contract.ENV_DASHBOARD_AUTH: "basic",
            contract.ENV_DASHBOARD_CREDENTIALS_FILE: str(self.credentials),
            contract.ENV_DASHBOARD_PORT: str(port or free_port()),
            **(env or {}),
        }

    def start(self, env: Mapping[str, str] | None = None, wait: bool = True) -> DashboardProcess:
        if not DASHBOARD_BIN.exists():
            pytest.fail(f"{DASHBOARD_BIN} is missing: run `bash .ci/bootstrap` to install the console scripts")
        environment = self.environment(env)
        log_path = self.workdir / f"dashboard-{len(self.started)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [str(DASHBOARD_BIN)], env=environment, stdout=log_file, stderr=log_file, cwd=self.workdir
            )
        dashboard = DashboardProcess(proc, int(environment[contract.ENV_DASHBOARD_PORT]), log_path)
        self.started.append(dashboard)
        if wait:

            def live() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"killsafe-dashboard exited {proc.returncode}:\n{dashboard.log_text()}")
                try:
                    return dashboard.get(contract.LIVE_PATH, user=None).status == 200
                except OSError:
                    return False

            wait_for(live, STARTUP_TIMEOUT, "killsafe-dashboard to serve /livez", 0.1)
        return dashboard

    def run(self, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the dashboard expecting it to exit at once (a configuration error)."""
        return subprocess.run(
            [str(DASHBOARD_BIN)],
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.workdir,
        )

    def cleanup(self) -> None:
        for dashboard in self.started:
            dashboard.stop()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture(scope="module")
def rds(module_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=module_redis.port, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_credentials(tmp_path_factory.mktemp("credentials") / "users")


@pytest.fixture(scope="module")
def dashboards(
    module_redis: RedisServer, credentials: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardFactory]:
    factory = DashboardFactory(module_redis.url, tmp_path_factory.mktemp("dashboard"), credentials)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def module_workers(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(module_redis, tmp_path_factory.mktemp("workers"))
    try:
        yield factory
    finally:
        factory.cleanup()


def handler_worker_env() -> dict[str, str]:
    """A worker that runs tests/dashboard/handlers.py (send_email, charge) next to the demo handlers."""
    return {
        contract.ENV_HANDLERS: "tests.dashboard.handlers:REGISTRY",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        contract.ENV_NEVER_AUTO_RETRY: NEVER,
    }


def fail_during_outage(
    rds: redis.Redis,
    redis_url: str,
    jobs: list[tuple[str, str, Mapping[str, object]]],
    queue: str = QUEUE,
    prefix: str = contract.DEFAULT_KEY_PREFIX,
) -> None:
    """Enqueue (name, id, data) jobs with one attempt while OUTAGE_KEY is set, wait until a running worker
    has failed them all, then end the outage (so a retry succeeds)."""
    rds.set(OUTAGE_KEY, "1")
    try:
        enqueue_many(
            redis_url,
            [(name, data, {"jobId": job_id, "attempts": 1, "removeOnFail": False}) for name, job_id, data in jobs],
            queue,
        )
        wait_for(
            lambda: all(rds.zscore(f"{prefix}:{queue}:failed", job_id) is not None for _, job_id, _ in jobs),
            60,
            f"jobs {[job_id for _, job_id, _ in jobs]} to fail",
            0.05,
        )
    finally:
        rds.delete(OUTAGE_KEY)


def job_state(rds: redis.Redis, job_id: str, queue: str = QUEUE) -> str:
    for state in ("completed", "failed", "delayed"):
        if rds.zscore(f"bull:{queue}:{state}", job_id) is not None:
            return state
    for state, key in (("active", "active"), ("waiting", "wait")):
        if job_id in rds.lrange(f"bull:{queue}:{key}", 0, -1):
            return state
    return "unknown"


def audit_records(rds: redis.Redis) -> list[dict[str, str]]:
    return [dict(fields) for _, fields in rds.xrange(contract.DLQ_AUDIT_STREAM) or []]


def write_failed_jobs(
    rds: redis.Redis,
    jobs: Iterable[tuple[str, str, Mapping[str, object]]],
    *,
    queue: str = QUEUE,
    prefix: str = contract.DEFAULT_KEY_PREFIX,
    finished_on: int = 1_800_000_000_000,
    batch: int = 5000,
) -> int:
    """Store (id, name, data) jobs as failed, field for field the way BullMQ's scripts leave a job that
    used its last attempt (fast enough for 100,000 of them); each finishes 1 ms after the previous one."""
    written = 0
    pipe = rds.pipeline(transaction=False)
    for job_id, name, data in jobs:
        at = finished_on + written
        pipe.hset(
            f"{prefix}:{queue}:{job_id}",
            mapping={
                "name": name,
                "data": json.dumps(data),
                "opts": json.dumps({"attempts": 1}),
                "timestamp": str(at - 50),
                "delay": "0",
                "priority": "0",
                "processedOn": str(at - 40),
                "finishedOn": str(at),
                "atm": "1",
                "ats": "1",
                "failedReason": f"RuntimeError: {name} failed (job {job_id})",
                "stacktrace": json.dumps([f"Traceback (most recent call last):\nRuntimeError: {name} failed"]),
            },
        )
        pipe.zadd(f"{prefix}:{queue}:failed", {job_id: at})
        written += 1
        if written % batch == 0:
            pipe.execute()
    pipe.execute()
    return written
