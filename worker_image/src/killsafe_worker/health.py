"""Readiness, liveness and metrics over HTTP, served on the worker's own event loop.

Readiness means "this worker can take jobs now": Redis answers, the worker's registration heartbeat
is fresh, the eviction policy cannot drop queue keys, and it is not shutting down. A Redis outage
only makes the worker not ready; restarting it would not bring Redis back.

Liveness means "restarting this process would help": jobs are waiting, this worker has free
capacity, and yet nothing was processed for the stall window; every slot of a queue is held by a
job running past its budget (max_job_seconds plus the cancellation grace: a handler that ignores
cancellation); or the event loop itself is stuck (the server runs on that loop, so a stuck loop
also makes the probe time out). Liveness is served from the first moment of the process, before
Redis is reached: a Redis outage at start is "alive, not ready", never a restart.

The server is a few lines on asyncio.start_server, not aiohttp: probes and scrapers send one GET
and read one small answer, and importing aiohttp.web alone cost ~8.5 MiB of the worker's idle RSS.
One request per connection (Connection: close), a bounded request head and a read timeout are all
the HTTP it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from killsafe_worker import contract
from killsafe_worker.listen import dual_stack_socket
from killsafe_worker.metrics import WorkerMetrics, exposition

PROBE_INTERVAL_SECONDS = 2.0
"""How often Redis is probed (reachability, eviction policy, queue counts, heartbeat)."""
TICK_SECONDS = 1.0
"""Supervision tick: loop-lag measurement, liveness evaluation, systemd watchdog."""
HEARTBEAT_TTL_SECONDS = 15
"""TTL of the registration key; readiness needs a heartbeat written within this window."""
LOOP_LAG_WINDOW_SECONDS = 10.0
"""A loop stall is reported by /livez for this long after it happened (probes are periodic)."""
MAX_REQUEST_HEAD_BYTES = 8192
"""Request line + headers; a probe sends ~100 bytes. Longer heads get 431 and the connection closes."""
READ_TIMEOUT_SECONDS = 5.0
"""A client must send its whole request head within this; a silent or slow one is disconnected."""
LINGER_SECONDS = 1.0
"""After an error answer, unread request bytes are discarded this long, so closing with data still
unread does not reset the connection before the client has read the answer."""

log = logging.getLogger(__name__)


@dataclass
class QueueHealth:
    """What liveness needs to know about one queue, updated by the probe and by job events."""

    concurrency: int
    in_flight: Callable[[], int]
    """Jobs this worker is running on the queue right now."""
    overdue: Callable[[], int] = lambda: 0
    """Of those, jobs running longer than their budget plus the cancellation grace."""
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
    """True while the worker refuses to claim jobs (unsafe eviction policy, Redis out of memory)."""
    redis_oom: str | None = None
    """Set while Redis refuses writes because it reached maxmemory (noeviction): an infrastructure fault."""
    memory_pressure: str | None = None
    """Set once memory passed the drain threshold: draining to exit for a restart."""
    fatal: str | None = None
    """An unrecoverable problem (a missing ACL permission): not ready until the process exits."""
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
        if self.fatal is not None:
            problems.append(f"unrecoverable: {self.fatal}")
        if self.memory_pressure is not None:
            problems.append(f"memory above the drain threshold ({self.memory_pressure}): draining to restart")
        if self.redis_error is not None:
            problems.append(f"redis: {self.redis_error}")
        if self.redis_oom is not None:
            problems.append(f"redis is out of memory (maxmemory reached, writes refused): {self.redis_oom}")
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
            overdue = entry.overdue()
            if entry.concurrency and overdue >= entry.concurrency:
                problems.append(
                    f"queue {name}: all {entry.concurrency} slots held by jobs running past their budget "
                    "(handlers that ignore cancellation)"
                )
            if entry.stall_since is None:
                continue
            idle = now - max(entry.stall_since, entry.last_processed)
            if idle >= self.liveness_stall_seconds:
                problems.append(
                    f"queue {name}: {entry.backlog} jobs waiting, free capacity, none processed for {idle:.0f}s"
                )
        return not problems, {"live": not problems, "problems": problems}


@dataclass(frozen=True)
class HttpResponse:
    """One complete answer; every answer closes the connection, so no keep-alive state exists."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()

    def encode(self, include_body: bool = True) -> bytes:
        """The whole answer; HEAD gets the same headers (Content-Length included) without the body."""
        lines = [
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.extra_headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + self.body if include_body else head


def _error(status: HTTPStatus, *extra_headers: tuple[str, str]) -> HttpResponse:
    """The same plain-text body aiohttp answered with ("404: Not Found")."""
    return HttpResponse(status, f"{status.value}: {status.phrase}".encode(), extra_headers=extra_headers)


def _json_response(ok: bool, body: Mapping[str, Any]) -> HttpResponse:
    return HttpResponse(200 if ok else 503, json.dumps(body).encode(), "application/json; charset=utf-8")


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def _parse_request_line(head: bytes) -> tuple[str, str]:
    """(method, path without query) of an HTTP/1.x request head; headers are not needed by any route."""
    try:
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
    return method, target.split("?", 1)[0]


class HealthServer:
    """READY_PATH, LIVE_PATH and METRICS_PATH over HTTP/1.1, one request per connection."""

    def __init__(self, state: HealthState, metrics: WorkerMetrics) -> None:
        self._routes: dict[str, Callable[[], HttpResponse]] = {
            contract.READY_PATH: lambda: _json_response(*state.readiness()),
            contract.LIVE_PATH: lambda: _json_response(*state.liveness()),
            contract.METRICS_PATH: self._metrics_text,
        }
        self._state = state
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    def _metrics_text(self) -> HttpResponse:
        self._metrics.worker_ready.set(1 if self._state.readiness()[0] else 0)
        return HttpResponse(200, *exposition(self._metrics.registry))

    @property
    def open_connections(self) -> int:
        """Connections being served right now (a silent client counts until its read timeout)."""
        return len(self._connections)

    async def start(self, port: int, hosts: Iterable[str] | None = None) -> None:
        """Listen on `hosts`, or (the default) on every IPv4 and IPv6 address."""
        if hosts is None:
            sock = dual_stack_socket(port)
            self._server = await asyncio.start_server(self._serve_connection, sock=sock, limit=MAX_REQUEST_HEAD_BYTES)
            return
        self._server = await asyncio.start_server(
            self._serve_connection, host=list(hosts), port=port, limit=MAX_REQUEST_HEAD_BYTES, reuse_address=True
        )

    async def cleanup(self) -> None:
        """Stop listening and drop any connection still open (a probe retries; nothing is lost)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def route(self, method: str, path: str) -> HttpResponse:
        handler = self._routes.get(path)
        if handler is None:
            return _error(HTTPStatus.NOT_FOUND)
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, ("Allow", "GET, HEAD"))
        try:
            return handler()
        except Exception:
            log.exception("health endpoint failed", extra={"path": path})
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Never raises: a client that vanishes, stalls or sends garbage only loses its own answer."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # reset, gone (ENOTCONN, EPIPE) or silent (TimeoutError): there is nobody to answer
        except asyncio.CancelledError:
            # Only cleanup() (or loop shutdown) cancels a connection, and this task is awaited by no
            # one: ending it cancelled would make Python 3.11's streams log a CancelledError traceback.
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.wait_closed(), LINGER_SECONDS)
            if task is not None:
                self._connections.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
            method, path = _parse_request_line(head)
        except asyncio.LimitOverrunError:
            await self._reject(reader, writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return
        except _BadRequest as bad:
            await self._reject(reader, writer, bad.status)
            return
        await _send(writer, self.route(method, path).encode(include_body=method != "HEAD"))

    async def _reject(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: HTTPStatus) -> None:
        await _send(writer, _error(status).encode())
        if writer.transport.is_closing() or not writer.can_write_eof():
            return
        writer.write_eof()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_discard_until_eof(reader), LINGER_SECONDS)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write unless the client is already gone (uvloop raises RuntimeError writing to a closed transport)."""
    if writer.transport.is_closing():
        return
    writer.write(data)
    await writer.drain()


async def _discard_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(MAX_REQUEST_HEAD_BYTES):
        pass


async def start_health_server(
    state: HealthState, metrics: WorkerMetrics, port: int, hosts: Iterable[str] | None = None
) -> HealthServer:
    """Serve the probes on every address, IPv4 and IPv6 (kubelet and Prometheus connect to the pod
    IP, which is IPv6 on an IPv6-only cluster), or on `hosts`; stop with cleanup()."""
    server = HealthServer(state, metrics)
    await server.start(port, hosts)
    return server
