"""killsafe-web as a real process against a real redis-server: enqueue, idempotency, outages, SIGTERM.

Every test talks HTTP to `killsafe-web` (the installed console script) and checks Redis itself,
never the app's own view of it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from bullmq import Queue, Worker
from bullmq.custom_errors import UnrecoverableError
from prometheus_client.parser import text_string_to_metric_families

from killsafe_worker import contract
from tests.conftest import RedisServer, free_port
from tests.worker.conftest import AuthRedisServer, capture_log_file, capture_output

QUEUE = "web-test"
WEB_BIN = Path(sys.executable).with_name("killsafe-web")
STARTUP_TIMEOUT = 60.0  # importing aiohttp + bullmq takes seconds on a loaded 2-core machine


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def call(method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, decoded JSON body); HTTP errors are answers too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@dataclass
class WebApp:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path
    metrics_port: int

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        return call("POST", self.url("/jobs"), body, raw)

    def get(self, path: str) -> tuple[int, Any]:
        return call("GET", self.url(path))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_web(redis_url: str, **extra_env: str) -> WebApp:
    if not WEB_BIN.exists():
        pytest.fail(f"{WEB_BIN} is missing: run `bash .ci/bootstrap` to install the console scripts")
    port = free_port()
    metrics_port = free_port()
    env = {
        **os.environ,
        contract.ENV_REDIS_URL: redis_url,
        contract.ENV_QUEUES: QUEUE,
        contract.ENV_WEB_PORT: str(port),
        contract.ENV_WEB_METRICS_PORT: str(metrics_port),
        contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "20",
        **extra_env,
    }
    env.pop(contract.ENV_REDIS_URL_FILE, None)
    log_path = capture_log_file(Path(tempfile.mkdtemp(prefix="killsafe-web-")) / "web.log")
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([str(WEB_BIN)], env=env, stdout=log_file, stderr=log_file, text=True)
    app = WebApp(proc, port, log_path, metrics_port)

    def live() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"killsafe-web exited {proc.returncode}: {app.log_text()}")
        try:
            return app.get(contract.LIVE_PATH)[0] == 200
        except OSError:
            return False

    wait_for(live, STARTUP_TIMEOUT, "killsafe-web to serve /livez")
    return app


@dataclass
class Stack:
    """A redis-server, a killsafe-web serving from it, and a plain client to inspect Redis directly."""

    server: RedisServer
    web: WebApp
    rds: redis.Redis


def _stack(server: RedisServer) -> Iterator[Stack]:
    web = start_web(server.url)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield Stack(server, web, client)
    finally:
        client.close()
        web.stop()


@pytest.fixture(scope="module")
def _module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = AuthRedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield from _stack(server)
    finally:
        server.stop(kill=True)


@pytest.fixture
def shared(_module_stack: Stack) -> Stack:
    """One web process for the tests that leave it running (starting one costs seconds): Redis emptied."""
    assert _module_stack.web.proc.poll() is None, "the shared killsafe-web died in an earlier test"
    _module_stack.rds.flushall()
    return _module_stack


@pytest.fixture
def own(redis_server: RedisServer) -> Iterator[Stack]:
    """A fresh Redis and web process, for tests that stop one of them."""
    yield from _stack(redis_server)


def job_key(job_id: str) -> str:
    return f"bull:{QUEUE}:{job_id}"


def added_events(rds: redis.Redis) -> list[str]:
    entries = rds.xrange(f"bull:{QUEUE}:events") or []
    return [str(fields["jobId"]) for _, fields in entries if fields and fields.get("event") == "added"]


def test_post_enqueues_one_job_carrying_the_idempotency_key(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    status, body = web_app.post({"name": "echo", "data": {"to": "a@example.com"}, "idempotency_key": "order-1"})

    assert status == 202
    assert body == {"id": "order-1", "queue": QUEUE, "idempotency_key": "order-1", "duplicate": False}
    stored = rds.hgetall(job_key("order-1"))
    assert stored["name"] == "echo"
    assert json.loads(stored["data"]) == {"to": "a@example.com", "idempotency_key": "order-1"}
    opts = json.loads(stored["opts"])
    assert opts["attempts"] == 3
    assert opts["backoff"] == {"type": "exponential", "delay": 1000}
    assert opts["removeOnComplete"] == {"age": 86400, "count": 10000}
    assert rds.lrange(f"bull:{QUEUE}:wait", 0, -1) == ["order-1"]


def test_post_without_key_uses_a_generated_one_as_job_id(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    status, body = web_app.post({"name": "echo", "data": {}})

    assert status == 202
    key = body["idempotency_key"]
    assert body["id"] == key and len(key) >= 32
    assert json.loads(rds.hget(job_key(key), "data") or "null") == {"idempotency_key": key}


def test_a_retried_post_enqueues_once(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    request = {"name": "echo", "data": {"n": 1}, "idempotency_key": "pay-7"}
    first = web_app.post(request)
    second = web_app.post(request)

    assert first == (202, {"id": "pay-7", "queue": QUEUE, "idempotency_key": "pay-7", "duplicate": False})
    assert second == (200, {"id": "pay-7", "queue": QUEUE, "idempotency_key": "pay-7", "duplicate": True})
    assert rds.lrange(f"bull:{QUEUE}:wait", 0, -1) == ["pay-7"]
    assert added_events(rds) == ["pay-7"]


def test_racing_duplicate_posts_agree_on_a_single_creator(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    request = {"name": "echo", "data": {"n": 2}, "idempotency_key": "race-1"}
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda _: web_app.post(request), range(12)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 11 + [202]
    assert {body["id"] for _, body in results} == {"race-1"}
    assert added_events(rds) == ["race-1"]


def test_a_key_reused_for_another_job_is_a_conflict(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    assert web_app.post({"name": "echo", "data": {"n": 1}, "idempotency_key": "k-1"})[0] == 202

    status, body = web_app.post({"name": "echo", "data": {"n": 2}, "idempotency_key": "k-1"})

    assert status == 409
    assert "another name or data" in body["error"]
    assert json.loads(rds.hget(job_key("k-1"), "data") or "null") == {"n": 1, "idempotency_key": "k-1"}


BAD_REQUESTS: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"name": "echo",', "not valid JSON"),
    ("not UTF-8", b'{"name": "\xff"}', "not valid JSON"),
    ("NaN is not JSON", b'{"name": "echo", "data": {"x": NaN}}', "NaN"),
    ("array body", b"[1, 2]", "JSON object"),
    ("unknown key", b'{"name": "echo", "data": {}, "priority": 1}', "unknown field 'priority'"),
    ("missing name", b'{"data": {}}', "'name'"),
    ("name not a string", b'{"name": 5, "data": {}}', "'name'"),
    ("empty name", b'{"name": "", "data": {}}', "'name'"),
    ("name too long", json.dumps({"name": "n" * 101}).encode(), "'name'"),
    ("data is a list", b'{"name": "echo", "data": [1]}', "'data' must be a JSON object"),
    ("data is a string", b'{"name": "echo", "data": "x"}', "'data' must be a JSON object"),
    ("empty key", b'{"name": "echo", "data": {}, "idempotency_key": ""}', "'idempotency_key'"),
    ("key not a string", b'{"name": "echo", "data": {}, "idempotency_key": 12}', "'idempotency_key'"),
    ("key too long", json.dumps({"name": "e", "idempotency_key": "k" * 201}).encode(), "'idempotency_key'"),
    ("key with a colon", b'{"name": "echo", "idempotency_key": "a:lock"}', "'idempotency_key'"),
    ("key of digits only", b'{"name": "echo", "idempotency_key": "123"}', "not only digits"),
    (
        "key differs from data's",
        b'{"name": "echo", "data": {"idempotency_key": "b"}, "idempotency_key": "a"}',
        "differs",
    ),
    ("data key without top-level key", b'{"name": "echo", "data": {"idempotency_key": "b"}}', "reserved"),
]


def test_bad_requests_get_a_400_with_the_reason_and_enqueue_nothing(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    for case, raw, reason in BAD_REQUESTS:
        status, body = web_app.post(raw=raw)
        assert status == 400, f"{case}: got {status} {body}"
        assert reason in body["error"], f"{case}: {body['error']!r} lacks {reason!r}"
    assert rds.keys(f"bull:{QUEUE}:*") == []


def test_an_oversized_body_is_refused_as_json(shared: Stack) -> None:
    web_app, rds = shared.web, shared.rds
    status, body = web_app.post({"name": "echo", "data": {"blob": "x" * 300_000}})

    assert status == 413
    assert "Maximum request body size" in body["error"]
    assert rds.keys(f"bull:{QUEUE}:*") == []


async def _process_all(url: str, expected: int) -> None:
    """A real bullmq worker: `echo` returns its data, `fail` raises an unrecoverable error."""

    async def process(job: Any, _token: str) -> Any:
        if job.name == "fail":
            raise UnrecoverableError("card declined")
        return {"echoed": job.data["n"]}

    queue = Queue(QUEUE, {"connection": url})
    worker = Worker(QUEUE, process, {"connection": url})
    try:
        deadline = time.monotonic() + 30
        while await queue.getJobCountByTypes("completed", "failed") < expected:
            assert time.monotonic() < deadline, "worker did not finish the jobs"
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
        await queue.close()


def test_get_job_reports_state_result_and_failure(shared: Stack) -> None:
    web_app = shared.web
    assert web_app.post({"name": "echo", "data": {"n": 4}, "idempotency_key": "ok-1"})[0] == 202
    assert web_app.post({"name": "fail", "data": {"n": 5}, "idempotency_key": "bad-1"})[0] == 202

    status, waiting = web_app.get("/jobs/ok-1")
    assert status == 200
    assert waiting["state"] == "waiting" and waiting["attemptsMade"] == 0 and waiting["name"] == "echo"
    assert waiting["data"] == {"n": 4, "idempotency_key": "ok-1"}

    asyncio.run(_process_all(shared.server.url, expected=2))

    done = web_app.get("/jobs/ok-1")[1]
    assert (done["state"], done["returnvalue"], done["attemptsMade"]) == ("completed", {"echoed": 4}, 1)
    failed = web_app.get("/jobs/bad-1")[1]
    assert (failed["state"], failed["failedReason"], failed["attemptsMade"]) == ("failed", "card declined", 1)
    assert web_app.get("/jobs/no-such-job") == (404, {"error": "no such job"})


def test_redis_down_gives_503_and_enqueues_nothing(own: Stack) -> None:
    web_app, redis_server, rds = own.web, own.server, own.rds
    assert web_app.get(contract.READY_PATH) == (200, {"status": "ready"})
    redis_server.stop()

    status, body = web_app.post({"name": "echo", "data": {}, "idempotency_key": "while-down"})
    assert status == 503
    assert body["idempotency_key"] == "while-down"
    assert web_app.get(contract.READY_PATH)[0] == 503
    assert web_app.get(contract.LIVE_PATH)[0] == 200, "a Redis outage is not a reason to restart the web app"
    assert web_app.get("/jobs/anything")[0] == 503

    redis_server.start()
    wait_for(lambda: web_app.get(contract.READY_PATH)[0] == 200, 30, "readiness after Redis is back")
    assert rds.exists(job_key("while-down")) == 0, "a 503 must not have enqueued the job"
    assert web_app.post({"name": "echo", "data": {}, "idempotency_key": "while-down"})[0] == 202


def test_starts_without_redis_and_is_live_but_not_ready() -> None:
    """A Redis outage at boot must not crash-loop the web tier: it serves, and readiness keeps it out of rotation."""
    app = start_web(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert app.get(contract.LIVE_PATH) == (200, {"status": "live"})
        status, body = app.get(contract.READY_PATH)
        assert (status, body["status"]) == (503, "redis unavailable")
        assert app.post({"name": "echo", "idempotency_key": "boot-1"})[0] == 503
    finally:
        app.stop()


def test_a_stuck_redis_gives_503_in_bounded_time_and_a_retry_is_safe(shared: Stack) -> None:
    """CLIENT PAUSE holds the add past the enqueue timeout: the client learns nothing was promised."""
    web_app, redis_server, rds = shared.web, shared.server, shared.rds
    request = {"name": "echo", "data": {}, "idempotency_key": "stuck-1"}
    redis_server.cli("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        status, body = web_app.post(request)
    finally:
        redis_server.cli("CLIENT", "UNPAUSE")

    assert (status, body["idempotency_key"]) == (503, "stuck-1")
    status, body = web_app.post(request)
    assert status in (200, 202)  # 200 if the paused add still ran after UNPAUSE: either way one job
    assert body["id"] == "stuck-1"
    assert added_events(rds) == ["stuck-1"]


def _blocked_clients(redis_server: RedisServer) -> int:
    info = redis_server.cli("INFO", "clients")
    return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("blocked_clients:")))


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def _keepalive_get(conn: http.client.HTTPConnection, path: str) -> tuple[int, Any]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_sigterm_turns_readiness_off_finishes_the_in_flight_enqueue_then_exits_0(own: Stack) -> None:
    web_app, redis_server, rds = own.web, own.server, own.rds
    keepalive = http.client.HTTPConnection("127.0.0.1", web_app.port, timeout=30)
    assert _keepalive_get(keepalive, contract.READY_PATH) == (200, {"status": "ready"})
    redis_server.cli("CLIENT", "PAUSE", "60000", "WRITE")
    result: dict[str, Any] = {}
    try:
        poster = threading.Thread(
            target=lambda: result.update(answer=web_app.post({"name": "echo", "idempotency_key": "inflight-1"}))
        )
        poster.start()
        wait_for(lambda: _blocked_clients(redis_server) >= 1, 10, "the enqueue to be held by CLIENT PAUSE")

        web_app.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _port_closed(web_app.port), 10, "the listener to close after SIGTERM")
        assert _keepalive_get(keepalive, contract.READY_PATH) == (503, {"status": "draining"})
        assert poster.is_alive(), "the in-flight request must still be waiting on Redis"
        assert web_app.proc.poll() is None, "the process must wait for the in-flight request"
    finally:
        redis_server.cli("CLIENT", "UNPAUSE")
        keepalive.close()

    poster.join(timeout=30)
    assert result["answer"][0] == 202
    assert web_app.proc.wait(timeout=30) == 0
    assert rds.lrange(f"bull:{QUEUE}:wait", 0, -1) == ["inflight-1"]
    stderr = web_app.log_text()
    messages = [json.loads(line)["msg"] for line in stderr.splitlines() if line.startswith("{")]
    assert messages.index("draining") < messages.index("stopped")


def test_a_request_past_the_drain_deadline_is_cut_and_the_exit_code_says_so(redis_server: RedisServer) -> None:
    """Exit 3 (EXIT_DRAIN_DEADLINE) so a supervisor and its logs know a client got no answer."""
    app = start_web(redis_server.url, **{contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "1"})
    redis_server.cli("CLIENT", "PAUSE", "60000", "WRITE")
    result: dict[str, Any] = {}

    def post() -> None:
        try:
            result["answer"] = app.post({"name": "echo", "idempotency_key": "cut-1"})
        except OSError as err:  # the connection is closed without a response
            result["error"] = err

    try:
        poster = threading.Thread(target=post)
        poster.start()
        wait_for(lambda: _blocked_clients(redis_server) >= 1, 10, "the enqueue to be held by CLIENT PAUSE")
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(timeout=30) == contract.EXIT_DRAIN_DEADLINE
        poster.join(timeout=30)
    finally:
        redis_server.cli("CLIENT", "UNPAUSE")
        app.stop()

    assert "answer" not in result, f"a cut request must get no answer, got {result.get('answer')}"
    stderr = app.log_text()
    assert '"requestsCut": 1' in stderr


def test_invalid_settings_exit_2_with_one_line(redis_server: RedisServer) -> None:
    env = {**os.environ, contract.ENV_REDIS_URL: redis_server.url, contract.ENV_WEB_PORT: "eighty"}
    done = subprocess.run([str(WEB_BIN)], check=False, env=env, capture_output=True, text=True, timeout=60)
    capture_output("killsafe-web with a bad port", done.stdout, done.stderr)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"killsafe-web: invalid {contract.ENV_WEB_PORT}='eighty': expected an integer from 1 to 65535"
    ]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(app: WebApp) -> Samples:
    """Every sample the metrics port serves, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}{contract.METRICS_PATH}", timeout=30) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests(samples: Samples, route: str, method: str, status: int) -> float:
    key = frozenset({"route": route, "method": method, "status": str(status)}.items())
    return samples.get((contract.METRIC_WEB_REQUESTS, key), 0.0)


def outcomes(samples: Samples) -> dict[str, float]:
    return {
        outcome: samples[(contract.METRIC_WEB_JOBS_SUBMITTED, frozenset({"queue": QUEUE, "outcome": outcome}.items()))]
        for outcome in contract.WEB_JOB_OUTCOMES
    }


def test_the_metrics_port_counts_requests_by_route_and_status_outcomes_and_readiness(own: Stack) -> None:
    web_app, redis_server = own.web, own.server
    before = scrape(web_app)
    assert outcomes(before) == dict.fromkeys(contract.WEB_JOB_OUTCOMES, 0.0), "every outcome starts at 0"
    assert before[(contract.METRIC_WEB_READY, frozenset())] == 1.0

    request = {"name": "echo", "data": {"n": 1}, "idempotency_key": "m-1"}
    assert web_app.post(request)[0] == 202
    assert web_app.post(request)[0] == 200
    assert web_app.post({**request, "data": {"n": 2}})[0] == 409
    assert web_app.post(raw=b"[1]")[0] == 400
    assert web_app.post({"name": "echo", "data": {"blob": "x" * 300_000}})[0] == 413
    assert web_app.get("/jobs/m-1")[0] == 200
    assert web_app.get("/jobs/nope")[0] == 404
    assert web_app.get("/no/such/route")[0] == 404

    after = scrape(web_app)
    assert [requests(after, "/jobs", "POST", status) for status in (202, 200, 409, 400, 413)] == [1, 1, 1, 1, 1]
    assert requests(after, "/jobs/{job_id}", "GET", 200) == 1
    assert requests(after, "/jobs/{job_id}", "GET", 404) == 1, "the route template, never the job id"
    assert requests(after, contract.WEB_UNMATCHED_ROUTE, "GET", 404) == 1
    assert not any("m-1" in value or "nope" in value for _, labels in after for _, value in labels)
    duration = frozenset({"route": "/jobs", "method": "POST"}.items())
    assert after[(f"{contract.METRIC_WEB_REQUEST_DURATION}_count", duration)] == 5
    assert after[(f"{contract.METRIC_WEB_REQUEST_DURATION}_sum", duration)] > 0
    assert outcomes(after) == {
        "enqueued": 1,
        "duplicate": 1,
        "conflict": 1,
        "invalid": 2,
        "draining": 0,
        "redis_unavailable": 0,
    }
    assert after[(contract.METRIC_WEB_REQUESTS_IN_FLIGHT, frozenset())] == 0

    redis_server.stop()
    assert web_app.post({"name": "echo", "idempotency_key": "m-2"})[0] == 503
    down = scrape(web_app)
    assert outcomes(down)["redis_unavailable"] == 1
    assert requests(down, "/jobs", "POST", 503) == 1
    assert down[(contract.METRIC_WEB_READY, frozenset())] == 0.0, "readiness is measured at each scrape"
    redis_server.start()
    wait_for(lambda: scrape(web_app)[(contract.METRIC_WEB_READY, frozenset())] == 1.0, 30, "ready again")


def test_the_public_port_serves_no_metrics(shared: Stack) -> None:
    web_app = shared.web
    status, body = web_app.get(contract.METRICS_PATH)
    assert (status, body) == (404, {"error": "404: Not Found"})
    assert requests(scrape(web_app), contract.WEB_UNMATCHED_ROUTE, "GET", 404) >= 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{web_app.metrics_port}/jobs", timeout=30)
    assert missing.value.code == 404, "the metrics port serves metrics only"


def test_a_busy_metrics_port_exits_1_and_says_which_listener(redis_server: RedisServer) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        squatter.bind(("::", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        env = {
            **os.environ,
            contract.ENV_REDIS_URL: redis_server.url,
            contract.ENV_WEB_PORT: str(free_port()),
            contract.ENV_WEB_METRICS_PORT: str(busy),
        }
        done = subprocess.run([str(WEB_BIN)], check=False, env=env, capture_output=True, text=True, timeout=60)
    capture_output("killsafe-web with a busy metrics port", done.stdout, done.stderr)
    assert done.returncode == contract.EXIT_FAILURE
    [line] = [json.loads(line) for line in done.stderr.splitlines() if "cannot listen" in line]
    assert (line["listener"], line["port"]) == ("metrics", busy)


def test_metrics_on_the_public_port_are_refused_at_start(redis_server: RedisServer) -> None:
    env = {
        **os.environ,
        contract.ENV_REDIS_URL: redis_server.url,
        contract.ENV_WEB_PORT: "8123",
        contract.ENV_WEB_METRICS_PORT: "8123",
    }
    done = subprocess.run([str(WEB_BIN)], check=False, env=env, capture_output=True, text=True, timeout=60)
    capture_output("killsafe-web with metrics on the public port", done.stdout, done.stderr)
    assert done.returncode == contract.EXIT_USAGE
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"killsafe-web: invalid {contract.ENV_WEB_METRICS_PORT}='8123': expected a port other than")
