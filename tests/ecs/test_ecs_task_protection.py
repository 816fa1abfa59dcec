"""Task scale-in protection against a local stand-in of the ECS agent's endpoint that records every call.

A real worker on a real redis-server gets ECS_AGENT_URI pointing at the stand-in: it protects its task
while it holds a job and releases it once idle; an endpoint that fails, hangs or is not there at all
never stops or slows job processing, and is logged once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from killsafe_worker import contract
from killsafe_worker.task_protection import (
    MAX_EXPIRES_MINUTES,
    STATE_PATH,
    TaskProtection,
    expires_in_minutes,
)
from tests.conftest import RedisServer, free_port
from tests.worker.conftest import WorkerFactory, client, enqueue, enqueue_many, job_state, wait_for


@dataclass
class AgentStandIn:
    """PUT /task-protection/v1/state recorder; `mode` ok | fail (HTTP 500) | slow (answers after 10 s)."""

    mode: str = "ok"
    calls: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                stand_in.calls.append((time.monotonic(), self.command, self.path, body))
                if stand_in.mode == "slow":
                    time.sleep(10)
                status = 500 if stand_in.mode == "fail" else 200
                reply = {"protection": {"ProtectionEnabled": body.get("ProtectionEnabled")}}
                if status != 200:
                    reply = {"error": {"Code": "ServerException", "Message": "agent is down"}}
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the worker gave up waiting (slow mode)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/task-1"

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, _, _, body in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent() -> Iterator[AgentStandIn]:
    stand_in = AgentStandIn()
    try:
        yield stand_in
    finally:
        stand_in.close()


def test_protects_while_busy_and_releases_when_idle(
    redis_server: RedisServer, workers: WorkerFactory, agent: AgentStandIn
) -> None:
    r = client(redis_server.url)
    worker = workers.start(env={contract.ENV_ECS_AGENT_URI: agent.uri, contract.ENV_MAX_JOB_SECONDS: "90"})
    time.sleep(1.5)
    assert agent.calls == [], "an idle worker never asks for protection"
    job = enqueue(redis_server.url, "sleep", {"seconds": 3, "idempotency_key": "protect-1"})
    wait_for(lambda: job_state(r, job) == "active", 30, "the job to start")
    wait_for(lambda: agent.calls, 5, "the protection call while the job runs")
    started = agent.calls[0][0]
    assert job_state(r, job) == "active", "protected while the job is still running"
    _, method, path, body = agent.calls[0]
    assert (method, path) == ("PUT", "/api/task-1" + STATE_PATH)
    assert body == {"ProtectionEnabled": True, "ExpiresInMinutes": math.ceil(90 / 60) + 1}
    wait_for(lambda: job_state(r, job) == "completed", 30, "the job to complete")
    wait_for(lambda: len(agent.calls) >= 2, 30, "the release once idle")
    released_at, _, _, release = agent.calls[1]
    assert release == {"ProtectionEnabled": False}
    assert released_at - started >= 3 + 9, "released only after the idle delay (10 s), not between jobs"
    time.sleep(2)
    assert len(agent.calls) == 2, "no further calls while idle"
    assert worker.status(contract.LIVE_PATH) == 200


@pytest.mark.parametrize("mode", ["ok", "fail", "slow", "down"])
def test_a_failing_slow_or_missing_endpoint_never_stops_or_delays_jobs(
    redis_server: RedisServer, workers: WorkerFactory, agent: AgentStandIn, mode: str
) -> None:
    r = client(redis_server.url)
    uri = agent.uri
    if mode == "down":
        agent.close()
        uri = f"http://127.0.0.1:{free_port()}/api/task-1"
    agent.mode = mode
    worker = workers.start(env={contract.ENV_ECS_AGENT_URI: uri})
    started = time.monotonic()
    jobs = enqueue_many(
        redis_server.url, [("sleep", {"seconds": 0.2, "idempotency_key": f"k{i}"}, {}) for i in range(15)]
    )
    wait_for(lambda: all(job_state(r, j) == "completed" for j in jobs), 30, "every job despite the endpoint")
    elapsed = time.monotonic() - started
    print(f"endpoint {mode}: 15 x 0.2 s jobs done in {elapsed:.1f} s")
    assert elapsed < 15, "the protection calls ran beside the jobs, not in their way"
    assert worker.status(contract.LIVE_PATH) == 200 and worker.status(contract.READY_PATH) == 200
    if mode != "down":
        assert agent.calls, "the worker did try the endpoint"
    warnings = [e for e in worker.logs() if e.get("msg", "").startswith("task protection call failed")]
    assert len(warnings) == (0 if mode == "ok" else 1), warnings


def test_without_ecs_agent_uri_nothing_is_called(
    redis_server: RedisServer, workers: WorkerFactory, agent: AgentStandIn
) -> None:
    r = client(redis_server.url)
    workers.start()
    job = enqueue(redis_server.url, "sleep", {"seconds": 1, "idempotency_key": "off-ecs"})
    wait_for(lambda: job_state(r, job) == "completed", 30, "the job")
    assert agent.calls == []


class _Clock:
    busy = False


def _protection(**kwargs: float) -> tuple[TaskProtection, _Clock]:
    state = _Clock()
    return TaskProtection("http://agent", lambda: state.busy, 60, **kwargs), state


def test_renews_every_minute_while_busy_and_lets_go_after_max_continuous() -> None:
    protection, state = _protection(max_continuous_seconds=300)
    state.busy = True
    assert protection.wanted(0) is True
    protection.protected, protection.protected_at = True, 0
    assert protection.wanted(30) is None
    assert protection.wanted(60) is True, "renewed before the expiry (2 minutes for a 60 s job budget)"
    protection.protected_at = 240
    assert protection.wanted(299) is None
    assert protection.wanted(300) is False, "a saturated worker lets a deployment proceed"
    protection.protected = False
    assert protection.wanted(400) is None, "and stays unprotected while still busy"
    state.busy = False
    assert protection.wanted(401) is None
    state.busy = True
    assert protection.wanted(402) is True, "protected again after an idle moment"


def test_idle_release_waits_so_a_trickle_of_jobs_does_not_flap() -> None:
    protection, state = _protection(idle_release_seconds=10)
    protection.protected, protection.protected_at = True, 0
    assert protection.wanted(1) is None
    assert protection.wanted(5) is None
    state.busy = True
    assert protection.wanted(6) is None
    state.busy = False
    assert protection.wanted(7) is None
    assert protection.wanted(17) is False


@pytest.mark.parametrize(("budget", "minutes"), [(1, 2), (60, 2), (61, 3), (105, 3), (3600, 61), (86_400, 1441)])
def test_expiry_outlasts_any_job_held_at_a_renewal(budget: float, minutes: int) -> None:
    assert expires_in_minutes(budget) == minutes
    assert minutes * 60 - 60 >= budget, "a job seen at a renewal ends before protection expires"
    assert 1 <= minutes <= MAX_EXPIRES_MINUTES
