"""Every workaround for a bullmq 3.4.4 (Python) bug, in one place, each with a regression test.

These patch library internals, so each is a separate function named after the bug it fixes, and
tests/worker/test_adapter_bugs.py runs every bug twice against a real Redis: once on the bare library
(asserting the bug is still there, so an upgrade that fixes it is noticed and the patch removed) and
once with the workaround (asserting it is gone).

B1  close() with concurrency >= 2 stops renewing the locks of jobs still running, so another worker
    re-runs them: `defer_lock_manager_close` keeps renewing until the worker's jobs are gone.
B2  blocking waits are rounded up to whole seconds because the worker never asks Redis its version,
    so delayed jobs and backoffs run ~1 s late: `use_exact_block_timeouts` asks it.
B3  redis-py retries are hard-coded to exponential backoff capped at 20 s: after a Redis restart the
    worker idles for seconds while its locks expire: `use_fast_reconnect` installs a short-capped
    retry (plus connect timeouts and TCP keepalive) on both connections.
B4  run() swallows unexpected exceptions (print_exc(); return): processing stops and the process
    looks alive: `run_supervised` turns that into ProcessingLoopDied so the process exits non-zero.
B5  (found here, not in the notes) redis-py 8.x (8.1 locked) reads with a 5 s default socket timeout, but
    bullmq blocks in BZPOPMIN for up to 10 s (drainDelay 5 s, delayed jobs up to 10 s): the read
    times out, the retry layer re-sends the *same* wait, and the worker never polls on its own. An
    idle worker reconnects every 5 s and a job delayed by more than ~5 s is not run until some other
    job wakes the worker: `use_blocking_read_timeout` gives the blocking connection a read timeout
    longer than any wait bullmq issues.

B6  run() builds each job's lock token in a closure that binds late: concurrent jobs share tokens
    (20 in flight, 2 distinct tokens), so anything keyed by token under-counts:
    `own_token_per_job` mints a fresh token for every claim.
B7  global rate limits (Node's Queue.setGlobalRateLimit, a Bull Board control) are ignored: the
    remaining limit is stored and never waited on, so the worker runs a burst, then idles its drain
    delay: `honour_rate_limits` waits the limit out, then claims again, as Node's worker does.
B8  connections are named `<prefix>:<queue>:w:<name>`, but Node's Queue.getWorkers() (and Bull
    Board's worker list) look for `<prefix>:<base64(queue)>:w:<name>`: `name_connections_like_node`;
    and the worker's name is never sent when a job is claimed, so `processedBy` stays empty:
    `record_processed_by`.
B9  a job failed for stalling gets the stack trace "NoneType: None" (traceback.format_exc() outside
    an exception) and nothing says what happened: `_process_job_claiming_next` records why (the
    worker running it lost its lock, how often, the limit) as both reason and stack trace.
B10 a job hash that cannot be parsed (non-JSON data or opts, a non-integer atm: a foreign producer)
    raises inside the claim: the job stays active, its lock expires, it is claimed again, forever:
    `fail_unparsable_jobs` moves it to failed once, with a reason naming the fields.

O1  (performance) the worker completes a job with moveToFinished(fetch_next=False) and claims the
    next with a second script call (moveToActive): 2 Redis round trips per job where Node BullMQ
    makes 1, half the throughput at concurrency 1: `fetch_next_on_complete` completes and claims in
    the one call and runs the claimed job in the same concurrency slot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
import sys
import time
import traceback
import types
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import bullmq.utils
import bullmq.worker
import msgpack  # type: ignore[import-untyped]
from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("killsafe_worker.bullmq")

RECONNECT_BACKOFF_CAP_SECONDS = 0.5
RECONNECT_BACKOFF_BASE_SECONDS = 0.05
RECONNECT_ATTEMPTS = 60
"""~30 s of retries inside redis-py before an error reaches bullmq (which then retries after
RUN_RETRY_DELAY_MS); readiness reports the outage meanwhile."""
CONNECT_TIMEOUT_SECONDS = 5.0
BLOCKING_READ_MARGIN_SECONDS = 5.0
"""Added to bullmq's longest blocking wait to get the blocking connection's read timeout (B5): long
enough never to cut a wait short, short enough to notice a silently dead connection."""
RUN_RETRY_DELAY_MS = 1000
"""bullmq's own wait after a connection error escaped redis-py (library default: 15 s)."""

MAX_RATE_LIMIT_WAIT_SECONDS = 30.0
"""B7: the longest single wait for a rate limit before claiming again (Node's maximumRateLimitDelay)."""
RATE_LIMIT_POLL_SECONDS = 0.05
"""B7: how often a rate-limit wait checks whether the worker is closing or pausing."""

Processor = Callable[[Any, str], Awaitable[Any]]


class ProcessingLoopDied(RuntimeError):
    """bullmq's run() returned although nobody closed the worker (B4): no job will be fetched again."""


class StalledTooOften(UnrecoverableError):  # type: ignore[misc]
    """B9: the job stalled more than maxStalledCount times; str() is the reason recorded on the job."""


class UnparsableJob(UnrecoverableError):  # type: ignore[misc]
    """B10: the job hash could not be parsed; str() names what could not be parsed."""


def fast_reconnect_retry() -> Retry:
    """The retry policy B3 needs: reconnect within half a second of Redis coming back."""
    return Retry(
        ExponentialBackoff(cap=RECONNECT_BACKOFF_CAP_SECONDS, base=RECONNECT_BACKOFF_BASE_SECONDS),
        RECONNECT_ATTEMPTS,
        # OSError too: a socket error raised before redis-py wraps it (typed as RedisError-only).
        supported_errors=(RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError),  # type: ignore[arg-type]
    )


def use_fast_reconnect(worker: Worker) -> None:
    """B3: short-capped retries, a connect timeout and TCP keepalive on both worker connections."""
    for connection in (worker.backend.connection, worker.backend.blocking_connection):
        client = connection.conn
        client.set_retry(fast_reconnect_retry())
        kwargs = client.connection_pool.connection_kwargs
        kwargs["socket_connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        kwargs["socket_keepalive"] = True


def use_blocking_read_timeout(worker: Worker) -> None:
    """B5: the blocking connection's read timeout outlasts the longest BZPOPMIN bullmq issues."""
    kwargs = worker.backend.blocking_connection.conn.connection_pool.connection_kwargs
    kwargs["socket_timeout"] = worker.maximumBlockTimeout + BLOCKING_READ_MARGIN_SECONDS


async def use_exact_block_timeouts(worker: Worker) -> None:
    """B2: learn the server version so blocking waits use fractional timeouts (Redis >= 6)."""
    await worker.backend.blocking_connection.getRedisVersion()
    await worker.backend.connection.getRedisVersion()


def defer_lock_manager_close(worker: Worker) -> None:
    """B1: the lock manager closes only once the jobs it renews have finished (or on force close)."""
    lock_manager = worker.lockManager
    close_now = lock_manager.close

    async def close_when_jobs_done() -> None:
        while lock_manager.tracked_jobs and not worker.forceClosing:
            await asyncio.sleep(0.05)
        await close_now()

    lock_manager.close = close_when_jobs_done


def fetch_next_on_complete(worker: Worker) -> None:
    """O1: one script call per successful job: complete it and claim the next one in the same slot.

    Worker.run() starts one processJob task per concurrency slot; this processJob keeps running the
    jobs its completions claim, so the slot stays busy and the concurrency limit holds. The next job
    is claimed only while the worker is neither closing nor paused (as Node's handleCompleted); a
    completion already in flight when close()/pause() starts may still bring one back, exactly like
    the library's own moveToActive in flight then: it is locked, tracked and run (the drain finishes
    it or hands it back at the deadline). A failed job claims nothing (the run loop fetches next).
    """

    async def process_job_and_the_ones_it_claims(job: Job, token: str) -> None:
        claimed: Job | None = job
        while claimed is not None:
            claimed = await _process_job_claiming_next(worker, claimed, token)

    worker.processJob = process_job_and_the_ones_it_claims


async def _process_job_claiming_next(worker: Worker, job: Job, token: str) -> Job | None:
    """bullmq 3.4.4's Worker.processJob line for line, except the lines marked O1; returns the job
    claimed together with the completion, if any.

    A full copy because the library decides fetch_next=False inside processJob with no hook. The
    claimed job's lock is tracked (by id, before this job is untracked) as soon as its claim is
    known, so renewal never pauses and B1's deferred close never sees an empty slot.
    """
    claimed: list[Any] | None = None  # O1: [job data, job id, rate-limit ms, delayed-until ms]
    try:
        # Set worker-level remove options on job if not already set
        if "removeOnComplete" not in job.opts and "removeOnComplete" in worker.opts:
            job.opts["removeOnComplete"] = worker.opts["removeOnComplete"]
        if "removeOnFail" not in job.opts and "removeOnFail" in worker.opts:
            job.opts["removeOnFail"] = worker.opts["removeOnFail"]

        worker.jobs.add((job, token))
        controller = worker.lockManager.track_job(
            job.id,
            token,
            int(time.time() * 1000),
            should_create_controller=worker._processor_wants_signal,
        )

        if job.deferredFailure:  # B9: a real reason and stack trace, not "NoneType: None"
            error = StalledTooOften(stalled_reason(worker, job))
            job.updateStacktrace = lambda: job.stacktrace.append(str(error))
            await job.moveToFailed(error, token)
            worker.emit("failed", job, error)
            return None

        if controller is not None:
            result = await worker.processor(job, token, controller.signal)
        else:
            result = await worker.processor(job, token)
        if not worker.forceClosing:
            fetch_next = not (worker.closing or worker.paused)  # O1 (was: fetch_next=False)
            completion = await worker.backend.moveToCompleted(
                job, result, job.opts.get("removeOnComplete", False), token, fetch_next=fetch_next
            )
            job.returnvalue = result
            job.attemptsMade = job.attemptsMade + 1
            if fetch_next:  # O1
                claimed = completion["result"]
                _track_claimed_lock(worker, claimed, token)
        worker.emit("completed", job, result)
    except (DelayedError, WaitingChildrenError):
        return None  # only the processor raises these: nothing was claimed
    except Exception as err:
        try:
            if not worker.forceClosing:
                await job.moveToFailed(err, token)

            worker.emit("failed", job, err)
        except Exception as err:
            worker.emit("error", err, job)
    finally:
        worker.jobs.discard((job, token))
        worker.lockManager.untrack_job(job.id)
    return await _start_claimed_job(worker, claimed, token)  # O1


def _track_claimed_lock(worker: Worker, claimed: list[Any] | None, token: str) -> None:
    """O1: renew the claimed job's lock from the moment it is ours (its slot's job is still tracked)."""
    if claimed and claimed[0] and claimed[1]:
        worker.lockManager.track_job(claimed[1], token, int(time.time() * 1000))


async def _start_claimed_job(worker: Worker, claimed: list[Any] | None, token: str) -> Job | None:
    """O1: what getNextJob does with a moveToActive result: record rate-limit/delay/drained state,
    build the job (advancing its scheduler) and emit "active"; the caller's loop then runs it."""
    if claimed is None:
        return None
    job_data, job_id, limit_until, delay_until = claimed
    job: Job | None = None
    try:
        job = await worker.nextJobFromJobData(job_data, job_id, int(limit_until or 0), int(delay_until or 0), token)
    except Exception as err:
        worker.emit("error", err)
    finally:
        if job is None and job_data and job_id:
            # Not run after all (error or cancellation): its lock expires, the stalled check re-queues it.
            worker.lockManager.untrack_job(job_id)
    if job is not None:
        worker.emit("active", job, "waiting")
    return job


def stalled_reason(worker: Worker, job: Job) -> str:
    """B9: why a job was failed for stalling, in words an operator can act on."""
    return (
        f"{job.deferredFailure}: the worker running it lost its lock {job.stalledCounter} time(s) "
        f"(killed, e.g. SIGKILL or an OOM kill, or frozen past lock_duration {worker.opts.get('lockDuration')} ms), "
        f"more than max_stalled_count ({worker.opts.get('maxStalledCount')}); it is not run again "
        "(a job that crashes its worker every time ends here)"
    )


def own_token_per_job(worker: Worker) -> None:
    """B6: every claim gets a token of its own, whatever token the library's run loop passes in."""
    get_next_job = worker.getNextJob
    serial = itertools.count(1)

    async def get_next_job_with_own_token(_shared_token: str) -> Any:
        return await get_next_job(f"{worker.id}:{next(serial)}")

    worker.getNextJob = get_next_job_with_own_token


def honour_rate_limits(worker: Worker) -> None:
    """B7: after a claim answered "rate limited for N ms", wait N ms (capped, interrupted by close or
    pause), then claim again at once instead of blocking for new-job markers."""
    limited_until = [0.0]  # time.monotonic() until which the queue said it is rate limited
    next_job_from_job_data = worker.nextJobFromJobData
    get_next_job = worker.getNextJob

    async def recording_rate_limit(
        job_data: Any, job_id: Any, limit_until: int = 0, delay_until: int = 0, token: str | None = None
    ) -> Any:
        limit_ms = int(limit_until or 0)
        if limit_ms > 0:  # the script answers the limiter's remaining TTL in ms (named limitUntil)
            wait = min(limit_ms / 1000, MAX_RATE_LIMIT_WAIT_SECONDS)
            limited_until[0] = max(limited_until[0], time.monotonic() + wait)
        return await next_job_from_job_data(job_data, job_id, limit_until, delay_until, token)

    async def waiting_out_rate_limit(token: str) -> Any:
        while (remaining := limited_until[0] - time.monotonic()) > 0 and not (worker.closing or worker.paused):
            await asyncio.sleep(min(remaining, RATE_LIMIT_POLL_SECONDS))
        if worker.closing or worker.paused:
            return None
        if limited_until[0]:
            limited_until[0] = 0.0
            worker.drained = False  # claim now; blocking on markers would wait out the drain delay
        return await get_next_job(token)

    worker.nextJobFromJobData = recording_rate_limit
    worker.getNextJob = waiting_out_rate_limit


def node_client_name(prefix: str, queue: str, worker_name: str | None) -> str:
    """The connection name Node BullMQ gives a worker, which Queue.getWorkers() and Bull Board match."""
    encoded = base64.b64encode(queue.encode()).decode()
    return f"{prefix}:{encoded}" + (f":w:{worker_name}" if worker_name else "")


def name_connections_like_node(worker: Worker) -> None:
    """B8: CLIENT SETNAME the way Node does, so Node's Queue.getWorkers() lists this worker."""
    worker.clientName = node_client_name(worker.prefix, worker.name, worker.workerName)


def record_processed_by(worker: Worker) -> None:
    """B8: send the worker's name with every claim (moveToActive, and moveToFinished claiming the
    next job) so the scripts set the job's `processedBy` (hash field pb), as Node's worker does."""
    name = worker.workerName
    if not name:
        return
    commands = worker.backend.scripts.commands
    for script, opts_index in (("moveToActive", 2), ("moveToFinished", 7)):
        commands[script] = _with_worker_name(commands[script], opts_index, name)


def _with_worker_name(script: Any, opts_index: int, name: str) -> Callable[..., Awaitable[Any]]:
    """The registered script, with `name` added to the msgpack-encoded opts argument."""

    async def call(keys: Any = None, args: Any = None, client: Any = None) -> Any:
        args = list(args or [])
        opts = msgpack.unpackb(args[opts_index], raw=False)
        opts["name"] = name
        args[opts_index] = msgpack.packb(opts, use_bin_type=True)
        return await script(keys=keys, args=args, client=client)

    return call


_JSON_FIELDS = ("data", "opts", "progress", "stacktrace", "returnvalue", "parent")
_INTEGER_FIELDS = ("atm", "attemptsMade", "ats", "stc", "delay", "priority", "timestamp", "finishedOn", "processedOn")
_INTEGER = re.compile(r"-?[0-9]+")
_PREVIEW_CHARS = 40


def unparsable_fields(job_data: Mapping[str, Any]) -> list[str]:
    """B10: what in a job hash Job.fromJSON cannot parse, one phrase per field."""
    problems = []
    for name in _JSON_FIELDS:
        if name not in job_data:
            continue
        raw = job_data[name]
        try:
            value = json.loads(raw)
        except (TypeError, ValueError):
            problems.append(f"{name} is not JSON ({_preview(raw)})")
            continue
        if name == "opts" and not isinstance(value, dict):
            problems.append(f"opts is not a JSON object ({_preview(raw)})")
    for name in _INTEGER_FIELDS:
        raw = job_data.get(name)
        if raw not in (None, "") and not _INTEGER.fullmatch(str(raw)):
            problems.append(f"{name} is not an integer ({_preview(raw)})")
    return problems


def _preview(raw: Any) -> str:
    text = str(raw)
    return repr(text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "...")


def fail_unparsable_jobs(worker: Worker) -> None:
    """B10: a claimed job whose hash cannot be parsed is moved to failed, once, with a reason that
    says what could not be parsed (a bad atm is reset so the script can count the attempt)."""
    next_job_from_job_data = worker.nextJobFromJobData

    async def failing_unparsable(
        job_data: Any, job_id: Any, limit_until: int = 0, delay_until: int = 0, token: str | None = None
    ) -> Any:
        try:
            return await next_job_from_job_data(job_data, job_id, limit_until, delay_until, token)
        except Exception as err:
            if not job_data or not job_id or token is None:
                raise
            await _fail_unparsable(worker, job_data, str(job_id), token, err)
            return None

    worker.nextJobFromJobData = failing_unparsable


async def _fail_unparsable(
    worker: Worker, job_data: Mapping[str, Any], job_id: str, token: str, err: Exception
) -> None:
    problems = unparsable_fields(job_data) or [f"{type(err).__name__}: {err}"]
    reason = f"job could not be parsed: {'; '.join(problems)} (written by a producer that does not speak BullMQ?)"
    job = Job(worker, str(job_data.get("name") or ""), None, {"attempts": 1})
    job.id = job_id
    fields = {"failedReason": reason, "stacktrace": json.dumps([reason])}
    if any(problem.startswith("atm ") for problem in problems):
        fields["atm"] = "0"
    try:
        await worker.backend.moveToFailed(
            job, reason, worker.opts.get("removeOnFail", False), token, fetch_next=False, fields_to_update=fields
        )
    except Exception as move_error:
        worker.emit("error", RuntimeError(f"job {job_id} could not be parsed nor failed: {move_error}"), job)
        return
    worker.emit("failed", job, UnparsableJob(reason))


async def run_supervised(worker: Worker) -> None:
    """B4: run the worker; raise ProcessingLoopDied if run() ends while the worker is not closing."""
    await worker.run()
    if not worker.closing:
        cause = _last_library_error.get(worker)
        raise ProcessingLoopDied(
            f"bullmq processing loop of queue {worker.name!r} stopped on its own"
            + (f": {type(cause).__name__}: {cause}" if cause else "")
        )


# bullmq reports unexpected errors with traceback.print_exc(): raw multi-line text on stderr, and for
# B4 the only trace of why processing stopped. Route them to logging (one JSON line, with the
# traceback) and remember the last one per worker so ProcessingLoopDied can name the cause.
_last_library_error: weakref.WeakKeyDictionary[Any, BaseException] = weakref.WeakKeyDictionary()


def _log_library_traceback(*_: Any, **__: Any) -> None:
    error = sys.exc_info()[1]
    frame = sys._getframe(1)  # the library function that caught the error
    owner = frame.f_locals.get("self") or getattr(frame.f_locals.get("emit_callback"), "__self__", None)
    if error is not None and owner is not None:
        _last_library_error[owner] = error
    log.error("bullmq reported an unexpected error", exc_info=error is not None)


class _TracebackToLogging(types.ModuleType):
    """A stand-in for the `traceback` module inside bullmq whose print_exc logs instead of printing."""

    def __init__(self) -> None:
        super().__init__("traceback")
        self.print_exc = _log_library_traceback

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)


def route_library_tracebacks_to_logging() -> None:
    """Make bullmq's print_exc() calls JSON log lines (idempotent)."""
    shim = _TracebackToLogging()
    for module in (bullmq.worker, bullmq.utils):
        if isinstance(getattr(module, "traceback", None), types.ModuleType):
            module.traceback = shim


def create_worker(queue: str, processor: Processor, opts: Mapping[str, Any]) -> Worker:
    """A bullmq Worker with B1, B3, B5-B10 and O1 applied; call `prepare_worker` (B2), then
    `run_supervised` (B4).

    Must be called inside a running event loop (bullmq creates asyncio objects in the constructor).
    """
    route_library_tracebacks_to_logging()
    worker = Worker(queue, processor, {"runRetryDelay": RUN_RETRY_DELAY_MS, **opts, "autorun": False})
    use_fast_reconnect(worker)
    use_blocking_read_timeout(worker)
    defer_lock_manager_close(worker)
    fetch_next_on_complete(worker)  # B9 lives in its copy of processJob
    own_token_per_job(worker)
    honour_rate_limits(worker)
    name_connections_like_node(worker)
    record_processed_by(worker)
    fail_unparsable_jobs(worker)
    return worker


async def prepare_worker(worker: Worker) -> None:
    """Round trips the worker needs before run(): B2. Bound it with the startup timeout."""
    await use_exact_block_timeouts(worker)
