"""`killsafe-web`: the reference HTTP front door that turns a POST into exactly one BullMQ job.

Three promises, each tested against a real redis-server and a real process:
- A 202 means the job is in Redis: the response is sent only after the add returned, the add is
  bounded by a timeout, and any Redis trouble is a 503 (with the idempotency key to retry with).
- A retried POST never enqueues twice: the idempotency key is the BullMQ job id, and "did it exist"
  is read in the same MULTI/EXEC transaction as the add, so even two racing requests agree.
  The window is the job's retention (removeOnComplete age/count below); past it, the worker's own
  SET NX marker (contract.IDEMPOTENCY_KEY_PREFIX) still stops the side effect from repeating.
- SIGTERM drains: readiness turns 503, the listener closes, in-flight requests finish (bounded by
  KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS), Redis is closed, and the exit code says whether any was cut.

Its metrics (requests by route template and status, durations, what became of each POST, readiness)
are served on a port of their own (contract.WEB_METRICS_PORT), never on the public one: whatever routes
the public port (a Service, a load balancer) cannot reach them, and only the scraper is let in there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aredis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from bullmq import Job, Queue
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from killsafe_worker import contract, stop_signals
from killsafe_worker.config import (
    SettingsError,
    env_float,
    env_int,
    forget_redis_credentials,
    key_prefix_from_env,
    log_level_from_env,
    queues_from_env,
    redis_url_file_from_env,
    redis_url_from_env,
    url_secrets,
)
from killsafe_worker.listen import dual_stack_socket
from killsafe_worker.logs import configure_logging
from killsafe_worker.metrics import WebMetrics, exposition
from killsafe_worker.redis_auth import UrlFileCredentials, authenticate_with

log = logging.getLogger("killsafe.web")

DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: Final = 10.0
"""In-flight request drain after SIGTERM; matches WebSpec.max_request_seconds' default."""
ENQUEUE_TIMEOUT_SECONDS: Final = 5.0
"""Upper bound for one Redis round of a request, so a stuck Redis gives a 503, never a hung client."""
READY_PING_TIMEOUT_SECONDS: Final = 1.0
STRAGGLER_CANCEL_SECONDS: Final = 0.5
"""After our own drain deadline, how long aiohttp waits before cancelling a request that is still running."""
MAX_BODY_BYTES: Final = 256 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 200
JOB_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
IDEMPOTENCY_KEY_PATTERN: Final = re.compile(rf"^[A-Za-z0-9_.~=+@-]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$")
"""No ':' (BullMQ derives `<id>:lock`, `<id>:logs` keys from the job id) and no '/' (it is a URL segment)."""
IDEMPOTENCY_DATA_FIELD: Final = contract.IDEMPOTENCY_DATA_FIELD
REQUEST_FIELDS: Final = frozenset({"name", "data", "idempotency_key"})

DEFAULT_JOB_OPTIONS: Final[Mapping[str, Any]] = {
    "attempts": 3,
    "backoff": {"type": "exponential", "delay": 1000},
    "removeOnComplete": {"age": 24 * 3600, "count": 10_000},
    "removeOnFail": False,
}
"""Three tries 1 s / 2 s apart; completed jobs kept a day (the duplicate-POST window, capped at 10k);
failed jobs kept for the dead-letter workflow (`killsafe-worker dlq`)."""


class BadJobRequest(ValueError):
    """The request body is not a valid job; str() is the reason returned with the 400."""


@dataclass(frozen=True)
class JobRequest:
    name: str
    data: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class EnqueueResult:
    job_id: str
    created: bool
    """False when a job with this idempotency key already existed (a retried POST)."""
    same_payload: bool = True
    """False when the existing job has another name or data: the key was reused for a different job."""


@dataclass(frozen=True)
class WebSettings:
    redis_url: str
    queue: str
    port: int
    shutdown_timeout_seconds: float
    log_level: str
    key_prefix: str = contract.DEFAULT_KEY_PREFIX
    redis_url_file: str | None = None
    metrics_port: int = contract.WEB_METRICS_PORT
    """0: no metrics listener."""


@dataclass
class WebState:
    """Per-process state the handlers share; `draining` flips once, on SIGTERM."""

    settings: WebSettings
    redis: aredis.Redis
    queue: Queue
    metrics: WebMetrics
    draining: bool = False
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def request_started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when no request is in flight within `timeout` seconds."""
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


STATE: Final = web.AppKey("killsafe_state", WebState)


def load_web_settings(environ: Mapping[str, str]) -> WebSettings:
    """Validate every variable the web app reads; raises SettingsError on the first bad one."""
    settings = WebSettings(
        redis_url=redis_url_from_env(environ),
        redis_url_file=redis_url_file_from_env(environ),
        key_prefix=key_prefix_from_env(environ),
        queue=queues_from_env(environ)[0],
        port=env_int(environ, contract.ENV_WEB_PORT, contract.WEB_PORT, minimum=1, maximum=65_535),
        shutdown_timeout_seconds=env_float(
            environ,
            contract.ENV_SHUTDOWN_TIMEOUT_SECONDS,
            DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
            minimum=0,
            maximum=3600,
        ),
        log_level=log_level_from_env(environ),
        metrics_port=env_int(
            environ, contract.ENV_WEB_METRICS_PORT, contract.WEB_METRICS_PORT, minimum=0, maximum=65_535
        ),
    )
    if settings.metrics_port == settings.port:
        raise SettingsError(
            contract.ENV_WEB_METRICS_PORT,
            str(settings.metrics_port),
            f"a port other than {contract.ENV_WEB_PORT} (metrics are never served on the public port), or 0 for none",
        )
    return settings


def parse_job_request(body: object) -> JobRequest:
    """Check shape, types and sizes of a decoded POST body; raises BadJobRequest with the reason."""
    if not isinstance(body, dict):
        raise BadJobRequest("body must be a JSON object with 'name', 'data' and optional 'idempotency_key'")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise BadJobRequest(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(REQUEST_FIELDS))}")
    name = body.get("name")
    if not isinstance(name, str) or not JOB_NAME_PATTERN.match(name):
        raise BadJobRequest(f"'name' must be a string matching {JOB_NAME_PATTERN.pattern}")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise BadJobRequest("'data' must be a JSON object")
    key = body.get("idempotency_key")
    if key is None:
        if IDEMPOTENCY_DATA_FIELD in data:
            raise BadJobRequest(
                f"'data.{IDEMPOTENCY_DATA_FIELD}' is reserved: send the key as the top-level 'idempotency_key'"
            )
        key = str(uuid.uuid4())
    elif not isinstance(key, str) or not IDEMPOTENCY_KEY_PATTERN.match(key) or key.isdigit():
        raise BadJobRequest(
            f"'idempotency_key' must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters of A-Z a-z 0-9 _ . ~ = + @ -, "
            "not only digits (digits-only ids are BullMQ's own)"
        )
    elif data.get(IDEMPOTENCY_DATA_FIELD, key) != key:
        raise BadJobRequest(f"'data.{IDEMPOTENCY_DATA_FIELD}' differs from 'idempotency_key'")
    return JobRequest(name=name, data={**data, IDEMPOTENCY_DATA_FIELD: key}, idempotency_key=key)


def redis_client(url: str, url_file: str | None = None) -> aredis.Redis:
    """A pooled client that fails fast: a down Redis becomes a 503 in about a second, not minutes.

    bullmq's own connection retries 20 times with a 20 s cap (notes: B3); we hand the Queue this
    client instead. Its credentials follow REDIS_URL_FILE (redis_auth): a rotated password is used
    from the next connection on.
    """
    client = aredis.Redis.from_url(
        url,
        decode_responses=True,  # bullmq expects str replies
        socket_connect_timeout=2.0,
        socket_timeout=ENQUEUE_TIMEOUT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=64,
    )
    authenticate_with(client, UrlFileCredentials(url, url_file))
    return client


async def enqueue(queue: Queue, client: aredis.Redis, request: JobRequest) -> EnqueueResult:
    """Add the job under its idempotency key, learning atomically whether it already existed.

    The add script silently returns the existing id for a duplicate jobId, so the previous name and
    data are read with HMGET inside the same MULTI/EXEC as the add (the way bullmq's addBulk queues
    its scripts on a transaction).
    """
    job = Job(queue, request.name, request.data, {**DEFAULT_JOB_OPTIONS, "jobId": request.idempotency_key})
    async with client.pipeline(transaction=True) as pipe:
        pipe.hmget(queue.toKey(request.idempotency_key), "name", "data")
        await queue.scripts.addJob(job, pipe)
        (previous_name, previous_data), job_id = await pipe.execute()
    if previous_name is None:
        return EnqueueResult(job_id=str(job_id), created=True)
    same = previous_name == request.name and json.loads(previous_data or "null") == request.data
    return EnqueueResult(job_id=str(job_id), created=False, same_payload=same)


def _reject_non_finite(constant: str) -> Any:
    """NaN and Infinity are not JSON; Python would accept them and bullmq would then fail to store the job."""
    raise ValueError(f"body is not valid JSON: {constant} is not a JSON number")


def _error(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, **extra}, status=status)


def _unavailable(reason: str, **extra: Any) -> web.Response:
    response = _error(503, reason, **extra)
    response.headers["Retry-After"] = "1"
    return response


async def post_job(request: web.Request) -> web.Response:
    """Enqueue one job; every answer, a too-large body included, counts under its outcome."""
    state = request.app[STATE]
    try:
        outcome, response = await _submit(state, request)
    except web.HTTPException:
        state.metrics.job_submitted("invalid")  # the body was refused before it was read (413)
        raise
    state.metrics.job_submitted(outcome)
    return response


async def _submit(state: WebState, request: web.Request) -> tuple[str, web.Response]:
    """(outcome from contract.WEB_JOB_OUTCOMES, answer) of one POST /jobs."""
    if state.draining:
        return "draining", _unavailable("shutting down; retry on another instance")
    try:
        body = json.loads(await request.read(), parse_constant=_reject_non_finite)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return "invalid", _error(400, f"body is not valid JSON: {err}")
    except ValueError as err:
        return "invalid", _error(400, str(err))
    try:
        job_request = parse_job_request(body)
    except BadJobRequest as err:
        return "invalid", _error(400, str(err))
    key = job_request.idempotency_key
    try:
        result = await asyncio.wait_for(enqueue(state.queue, state.redis, job_request), ENQUEUE_TIMEOUT_SECONDS)
    except (RedisError, OSError, TimeoutError) as err:
        # The add may or may not have reached Redis: never claim it did. Retrying with the same key is safe.
        log.warning("enqueue failed", extra={"idempotencyKey": key, "error": repr(err)})
        return "redis_unavailable", _unavailable(
            "queue unavailable; retry with the same idempotency_key", idempotency_key=key
        )
    body_out = {"id": result.job_id, "queue": state.settings.queue, "idempotency_key": key}
    if result.created:
        log.info("job enqueued", extra={"jobId": result.job_id, "jobName": job_request.name})
        return "enqueued", web.json_response(
            {**body_out, "duplicate": False}, status=202, headers={"Location": f"/jobs/{result.job_id}"}
        )
    if not result.same_payload:
        return "conflict", _error(
            409, "idempotency_key already used for a job with another name or data", id=result.job_id
        )
    return "duplicate", web.json_response({**body_out, "duplicate": True}, status=200)


async def get_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    job_id = request.match_info["job_id"]
    if len(job_id) > MAX_IDEMPOTENCY_KEY_LENGTH:
        return _error(404, "no such job")

    async def read() -> tuple[Job | None, str]:
        job = await state.queue.getJob(job_id)
        return job, (await job.getState() if job is not None else "unknown")

    try:
        job, job_state = await asyncio.wait_for(read(), ENQUEUE_TIMEOUT_SECONDS)
    except (RedisError, OSError, TimeoutError):
        return _unavailable("queue unavailable")
    if job is None:
        return _error(404, "no such job")
    return web.json_response(
        {
            "id": job_id,
            "queue": state.settings.queue,
            "name": job.name,
            "state": job_state,
            "data": job.data,
            "attempts": job.attempts,
            "attemptsMade": job.attemptsMade,
            "returnvalue": job.returnvalue,
            "failedReason": job.failedReason,
            "timestamp": job.timestamp,
            "processedOn": job.processedOn or None,
            "finishedOn": job.finishedOn or None,
        }
    )


async def readiness(state: WebState) -> tuple[bool, dict[str, str]]:
    """Ready only while not draining and Redis answers PING quickly; also sets the readiness metric."""
    body: dict[str, str] = {"status": "ready"}
    if state.draining:
        body = {"status": "draining"}
    else:
        try:
            await asyncio.wait_for(state.redis.ping(), READY_PING_TIMEOUT_SECONDS)
        except (RedisError, OSError, TimeoutError) as err:
            body = {"status": "redis unavailable", "error": type(err).__name__}
    ready = body["status"] == "ready"
    state.metrics.ready.set(1 if ready else 0)
    return ready, body


async def readyz(request: web.Request) -> web.Response:
    """200 only while not draining and Redis answers PING quickly: routing stops before we do."""
    ready, body = await readiness(request.app[STATE])
    return web.json_response(body, status=200 if ready else 503)


async def livez(_request: web.Request) -> web.Response:
    """200 while the loop serves requests; Redis trouble is a readiness matter, not a restart."""
    return web.json_response({"status": "live"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.BaseRequest) -> str:
    """`/jobs/{job_id}`, not the job id: one series per route, whatever the paths asked for."""
    resource = request.match_info.route.resource if isinstance(request, web.Request) else None
    return resource.canonical if resource is not None else contract.WEB_UNMATCHED_ROUTE


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count in-flight requests (the drain waits for them), render HTTP errors as JSON and record
    each answer in the metrics (a request cancelled mid-way has no answer and is not counted)."""
    state = request.app[STATE]
    state.request_started()
    started = time.perf_counter()
    status: int | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return _error(exc.status, exc.text or exc.reason)
    except Exception:
        status = 500  # aiohttp answers an unhandled exception with a 500
        raise
    finally:
        state.request_finished()
        if status is not None:
            state.metrics.request_finished(
                route_template(request), request.method, status, time.perf_counter() - started
            )


class AccessLogger(AbstractAccessLogger):
    """One structured line per request; probes at DEBUG so they do not drown the enqueue lines."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in (contract.READY_PATH, contract.LIVE_PATH) else logging.INFO
        self.logger.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "durationMs": round(time * 1000, 1),
            },
        )


def create_app(settings: WebSettings) -> web.Application:
    """The public application, with its Redis client and Queue closed on cleanup (no METRICS_PATH)."""
    app = web.Application(middlewares=[track_requests], client_max_size=MAX_BODY_BYTES)

    async def redis_lifecycle(app: web.Application) -> AsyncIterator[None]:
        client = redis_client(settings.redis_url, settings.redis_url_file)
        queue = Queue(settings.queue, {"connection": client, "prefix": settings.key_prefix})
        metrics = WebMetrics(settings.queue, in_flight=lambda: app[STATE].in_flight)
        app[STATE] = WebState(settings=settings, redis=client, queue=queue, metrics=metrics)
        yield
        await queue.close()  # also closes `client`: the Queue's backend owns the connection it was given

    app.cleanup_ctx.append(redis_lifecycle)
    app.router.add_post("/jobs", post_job)
    app.router.add_get("/jobs/{job_id}", get_job)
    app.router.add_get(contract.READY_PATH, readyz)
    app.router.add_get(contract.LIVE_PATH, livez)
    return app


def create_metrics_app(public: web.Application) -> web.Application:
    """METRICS_PATH of the public app's registry, for the metrics port only; readiness is measured
    at each scrape, so the gauge is current even when no probe ran."""

    async def metrics(_request: web.Request) -> web.Response:
        state = public[STATE]
        await readiness(state)
        body, content_type = exposition(state.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get(contract.METRICS_PATH, metrics)
    return app


async def _start_site(runner: web.AppRunner, port: int, what: str) -> web.SockSite | None:
    """Listen on every IPv4 and IPv6 address; None (logged) when the port cannot be bound."""
    try:
        site = web.SockSite(runner, dual_stack_socket(port))
        await site.start()
    except OSError as err:
        log.error("cannot listen", extra={"port": port, "listener": what, "error": str(err)})
        return None
    return site


async def serve(settings: WebSettings) -> int:
    """Serve on every IPv4 and IPv6 address until SIGTERM/SIGINT, then drain; 0 when every in-flight
    request finished in time.

    The drain is ours, not aiohttp's: its shutdown_timeout is spent twice (a wait, then a wait after
    a payload cancel our handlers ignore), which would overrun the platform's kill deadline.
    """
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        shutdown_timeout=STRAGGLER_CANCEL_SECONDS,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("killsafe.web.access"),
    )
    await runner.setup()
    state = app[STATE]
    metrics_runner: web.AppRunner | None = None
    if settings.metrics_port:
        metrics_runner = web.AppRunner(create_metrics_app(app), access_log=None)
        await metrics_runner.setup()
        if await _start_site(metrics_runner, settings.metrics_port, "metrics") is None:
            await metrics_runner.cleanup()
            await runner.cleanup()
            return contract.EXIT_FAILURE
    site = await _start_site(runner, settings.port, "http")
    if site is None:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
        return contract.EXIT_FAILURE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if stop_signals.received_early() is not None:
        stop.set()  # a stop requested while starting: drain (nothing is in flight) and exit
    log.info(
        "listening",
        extra={
            "port": settings.port,
            "metricsPort": settings.metrics_port or None,
            "queue": settings.queue,
            "keyPrefix": settings.key_prefix,
        },
    )
    await stop.wait()

    state.draining = True  # readiness and new POSTs on open keep-alive connections now get 503
    await site.stop()  # no new connections
    log.info(
        "draining",
        extra={"inFlight": state.in_flight, "shutdownTimeoutSeconds": settings.shutdown_timeout_seconds},
    )
    drained = await state.wait_idle(settings.shutdown_timeout_seconds)
    cut = state.in_flight
    if metrics_runner is not None:
        await metrics_runner.cleanup()  # scraped until here (ready 0 while draining); Redis closes next
    await runner.cleanup()  # closes idle connections, cancels stragglers, then closes Redis
    if not drained:
        log.error("drain deadline passed; in-flight requests were cut", extra={"requestsCut": cut})
        return contract.EXIT_DRAIN_DEADLINE
    log.info("stopped")
    return contract.EXIT_OK


def main() -> int:
    """Entry point behind `killsafe-web` (cli.web_main, which catches stop signals before importing
    this module); configuration comes from the environment only."""
    stop_signals.catch_early()
    try:
        settings = load_web_settings(os.environ)
    except SettingsError as err:
        print(f"killsafe-web: {err}", file=sys.stderr)
        return contract.EXIT_USAGE
    forget_redis_credentials(os.environ)
    configure_logging(settings.log_level, secrets=url_secrets(settings.redis_url))
    return asyncio.run(serve(settings))
