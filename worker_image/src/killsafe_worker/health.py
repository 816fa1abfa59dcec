"""Readiness, liveness and metrics over HTTP, served on the worker's own event loop.

Readiness means "this worker can take jobs now": Redis answers, the worker's registration heartbeat
is fresh, the eviction policy cannot drop queue keys, and it is not shutting down. A Redis outage
only makes the worker not ready; restarting it would not bring Redis back.

Liveness means "restarting this process would help": jobs are waiting, this worker has free
capacity, and yet nothing was processed for the stall window; or the event loop itself is stuck
(the server runs on that loop, so a stuck loop also makes the probe time out).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from killsafe_worker import contract
from killsafe_worker.metrics import WorkerMetrics

PROBE_INTERVAL_SECONDS = 2.0
"""How often Redis is probed (reachability, eviction policy, queue counts, heartbeat)."""
TICK_SECONDS = 1.0
"""Supervision tick: loop-lag measurement, liveness evaluation, systemd watchdog."""
HEARTBEAT_TTL_SECONDS = 15
"""TTL of the registration key; readiness needs a heartbeat written within this window."""
LOOP_LAG_WINDOW_SECONDS = 10.0
"""A loop stall is reported by /livez for this long after it happened (probes are periodic)."""


@dataclass
class QueueHealth:
    """What liveness needs to know about one queue, updated by the probe and by job events."""

    concurrency: int
    in_flight: Callable[[], int]
    """Jobs this worker is running on the queue right now."""
    backlog: int = 0
    """Waiting + prioritized jobs at the last successful sample."""
    sampled_at: float | None = None
    throttled: bool = False
    """The queue itself holds jobs back (paused, global concurrency reached, rate limited): not a stall."""
    last_processed: float = field(default_factory=time.monotonic)
    stall_since: float | None = None


@dataclass
class HealthState:
    """Shared state behind /readyz and /livez; times are time.monotonic()."""

    queues: dict[str, QueueHealth]
    liveness_stall_seconds: float
    loop_lag_limit_seconds: float
    started: bool = False
    shutting_down: bool = False
    redis_error: str | None = "not checked yet"
    redis_checked_at: float | None = None
    registered_at: float | None = None
    eviction_policy: str | None = None
    claiming_paused: bool = False
    """True while the worker refuses to claim jobs (unsafe eviction policy)."""
    last_tick: float = field(default_factory=time.monotonic)
    lag_events: list[tuple[float, float]] = field(default_factory=list)
    """(when, lag seconds) of ticks that came later than the limit, kept for LOOP_LAG_WINDOW_SECONDS."""

    @property
    def eviction_policy_safe(self) -> bool:
        return self.eviction_policy in contract.SAFE_MAXMEMORY_POLICIES

    def record_sample(self, queue: str, backlog: int, throttled: bool) -> None:
        entry = self.queues[queue]
        entry.backlog = backlog
        entry.throttled = throttled
        entry.sampled_at = time.monotonic()

    def record_tick(self, expected_interval: float) -> None:
        """Called every tick from the event loop; a late tick means the loop was blocked."""
        now = time.monotonic()
        lag = now - self.last_tick - expected_interval
        self.last_tick = now
        if lag > self.loop_lag_limit_seconds:
            self.lag_events.append((now, lag))
        self.lag_events = [(at, seconds) for at, seconds in self.lag_events if now - at < LOOP_LAG_WINDOW_SECONDS]
        self._update_stalls(now)

    def _update_stalls(self, now: float) -> None:
        for entry in self.queues.values():
            fresh = entry.sampled_at is not None and now - entry.sampled_at < 3 * PROBE_INTERVAL_SECONDS
            could_work = (
                fresh
                and entry.backlog > 0
                and entry.in_flight() < entry.concurrency
                and not entry.throttled
                and not self.claiming_paused
                and self.started
                and not self.shutting_down
            )
            if not could_work:
                entry.stall_since = None
            elif entry.stall_since is None:
                entry.stall_since = now

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        problems: list[str] = []
        if not self.started:
            problems.append("starting")
        if self.shutting_down:
            problems.append("shutting down")
        if self.redis_error is not None:
            problems.append(f"redis: {self.redis_error}")
        if self.registered_at is None or now - self.registered_at > HEARTBEAT_TTL_SECONDS:
            problems.append("worker registration heartbeat is stale")
        if self.eviction_policy is not None and not self.eviction_policy_safe:
            problems.append(
                f"redis maxmemory-policy is {self.eviction_policy!r}; queues need one of "
                f"{sorted(contract.SAFE_MAXMEMORY_POLICIES)}"
            )
        return not problems, {"ready": not problems, "problems": problems}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        problems: list[str] = []
        since_tick = now - self.last_tick
        if since_tick > TICK_SECONDS + self.loop_lag_limit_seconds:
            problems.append(f"event loop blocked: last tick {since_tick:.1f}s ago")
        if self.lag_events:
            worst = max(seconds for _, seconds in self.lag_events)
            problems.append(f"event loop was blocked for {worst:.1f}s within {LOOP_LAG_WINDOW_SECONDS:g}s")
        for name, entry in self.queues.items():
            if entry.stall_since is None:
                continue
            idle = now - max(entry.stall_since, entry.last_processed)
            if idle >= self.liveness_stall_seconds:
                problems.append(
                    f"queue {name}: {entry.backlog} jobs waiting, free capacity, none processed for {idle:.0f}s"
                )
        return not problems, {"live": not problems, "problems": problems}


def _json_response(ok: bool, body: Mapping[str, Any]) -> web.Response:
    return web.Response(status=200 if ok else 503, text=json.dumps(body), content_type="application/json")


def health_app(state: HealthState, metrics: WorkerMetrics) -> web.Application:
    """The aiohttp application answering READY_PATH, LIVE_PATH and METRICS_PATH."""

    async def readyz(_: web.Request) -> web.Response:
        ok, body = state.readiness()
        return _json_response(ok, body)

    async def livez(_: web.Request) -> web.Response:
        ok, body = state.liveness()
        return _json_response(ok, body)

    async def metrics_text(_: web.Request) -> web.Response:
        metrics.worker_ready.set(1 if state.readiness()[0] else 0)
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get(contract.READY_PATH, readyz)
    app.router.add_get(contract.LIVE_PATH, livez)
    app.router.add_get(contract.METRICS_PATH, metrics_text)
    return app


async def start_health_server(
    state: HealthState, metrics: WorkerMetrics, port: int, hosts: Iterable[str] = ("0.0.0.0",)
) -> web.AppRunner:
    """Serve the probes on all interfaces (kubelet and Prometheus connect to the pod IP)."""
    runner = web.AppRunner(health_app(state, metrics), access_log=None, handle_signals=False)
    await runner.setup()
    for host in hosts:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner
