"""What the dashboard reads from Redis: every read bounded, whatever the size of the failed set.

- counts by state come from `queue_counts` (the worker's probe uses the same commands, so the page and
  `killsafe_queue_jobs` agree); throughput from BullMQ's per-minute metrics the workers record.
- a page of failed jobs is one ZCARD + one ZREVRANGE over the page and one HMGET of a few fields per
  job on it (never HGETALL: data and stack traces can be large), in two round trips.
- a search reads at most SEARCH_SCAN_LIMIT entries of the failed set per request and returns a cursor
  to go on from: there is no index by name, and a page must answer quickly with 100,000 failed jobs.
- workers come from CLIENT LIST (the connection names BullMQ gives them, as Queue.getWorkers and Bull
  Board read them) joined with their killsafe heartbeat keys: no SCAN over the keyspace.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from killsafe_worker import contract, queue_counts
from killsafe_worker.health import HEARTBEAT_TTL_SECONDS, PROBE_INTERVAL_SECONDS

SUMMARY_FIELDS: Final = ("name", "atm", "finishedOn", "timestamp", "failedReason")
REASON_PREVIEW_CHARS: Final = 300
SEARCH_SCAN_LIMIT: Final = 5000
"""Failed-set entries one search request examines (newest first); the page offers to go on from there."""
DATA_DISPLAY_CHARS: Final = 16 * 1024
"""Job data beyond this is cut on the page (the job itself is untouched)."""
MINUTES_PER_HOUR: Final = 60
HEARTBEAT_STALE_SECONDS: Final = 3 * PROBE_INTERVAL_SECONDS
"""A worker heartbeats every probe interval; three missed beats and it is shown as not ready (a draining
worker stops heartbeating, so this is how long the page may still call it ready)."""


@dataclass(frozen=True)
class Throughput:
    completed: int | None
    """Jobs completed in the last 60 minutes (None: no worker records BullMQ metrics for this queue)."""
    failed: int | None
    """Jobs that failed for good (moved to the failed set) in the last 60 minutes."""


@dataclass(frozen=True)
class QueueOverview:
    name: str
    counts: dict[str, int]
    """contract.QUEUE_STATES (what the metrics report) plus `completed` (the retained completed jobs)."""
    paused: bool
    throughput: Throughput


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    queues: tuple[str, ...]
    host: str
    pid: int | None
    concurrency: int | None
    in_flight: int | None
    reported_ready: bool | None
    """What the worker's own readiness said at its last heartbeat (None: no killsafe heartbeat)."""
    heartbeat_age_seconds: float | None

    @property
    def ready(self) -> bool:
        return (
            bool(self.reported_ready)
            and self.heartbeat_age_seconds is not None
            and self.heartbeat_age_seconds <= HEARTBEAT_STALE_SECONDS
        )

    @property
    def status(self) -> str:
        if self.heartbeat_age_seconds is None:
            return "connected, no killsafe heartbeat (not a killsafe worker, or Redis denied it)"
        if self.heartbeat_age_seconds > HEARTBEAT_STALE_SECONDS:
            return f"no heartbeat for {self.heartbeat_age_seconds:.0f} s (draining, stopped or cut off)"
        if not self.reported_ready:
            return "not ready (its /readyz says why)"
        return "ready"


@dataclass(frozen=True)
class Overview:
    queues: list[QueueOverview]
    workers: list[WorkerInfo]
    workers_error: str | None
    eviction_policy: str


@dataclass(frozen=True)
class FailedSummary:
    id: str
    name: str
    attempts_made: int
    finished_on: int | None
    timestamp: int | None
    reason: str
    """First line of the failure reason, cut at REASON_PREVIEW_CHARS."""


@dataclass(frozen=True)
class FailedPage:
    total: int
    jobs: list[FailedSummary]
    start: int


@dataclass(frozen=True)
class SearchResult:
    jobs: list[FailedSummary]
    next_cursor: int | None
    """Where the next request goes on scanning (None: the whole failed set was searched)."""
    scanned_from: int
    scanned: int


@dataclass(frozen=True)
class JobView:
    id: str
    name: str
    state: str
    attempts: int
    attempts_made: int
    attempts_started: int
    timestamp: int | None
    processed_on: int | None
    finished_on: int | None
    failed_reason: str
    stacktrace: list[str]
    data_text: str
    data_chars: int
    returnvalue_text: str | None
    opts_text: str

    @property
    def data_truncated(self) -> bool:
        return self.data_chars > len(self.data_text)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _summary(job_id: str, fields: Sequence[Any]) -> FailedSummary | None:
    name, attempts_made, finished_on, timestamp, reason = fields
    if name is None:
        return None  # removed between the range and the read
    first_line = (reason or "").strip().splitlines()[0] if (reason or "").strip() else ""
    if len(first_line) > REASON_PREVIEW_CHARS:
        first_line = first_line[: REASON_PREVIEW_CHARS - 1] + "…"
    return FailedSummary(
        id=job_id,
        name=str(name),
        attempts_made=_int(attempts_made) or 0,
        finished_on=_int(finished_on),
        timestamp=_int(timestamp),
        reason=first_line,
    )


async def summaries(client: aredis.Redis, keys: dict[str, str], job_ids: Sequence[str]) -> list[FailedSummary]:
    """A few small fields per job, in one round trip."""
    if not job_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys[""] + job_id, list(SUMMARY_FIELDS))
    replies = await pipe.execute()
    return [s for job_id, fields in zip(job_ids, replies, strict=True) if (s := _summary(job_id, fields))]


async def failed_page(client: aredis.Redis, keys: dict[str, str], page: int, per_page: int) -> FailedPage:
    """Failed jobs newest first (the failed set is scored by finish time), one page of them."""
    start = max(0, page) * per_page
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys["failed"])
    pipe.zrevrange(keys["failed"], start, start + per_page - 1)
    total, ids = await pipe.execute()
    return FailedPage(total=int(total), jobs=await summaries(client, keys, [str(i) for i in ids]), start=start)


def matches(query: str, job_id: str, name: str | None) -> bool:
    needle = query.casefold()
    return needle in job_id.casefold() or (name is not None and needle in name.casefold())


async def search_failed(
    client: aredis.Redis,
    keys: dict[str, str],
    query: str,
    *,
    cursor: int = 0,
    limit: int,
    scan_limit: int = SEARCH_SCAN_LIMIT,
) -> SearchResult:
    """Failed jobs whose id or name contains `query` (case-insensitive), newest first, examining at most
    `scan_limit` entries from `cursor`; an exact id is found at once wherever it is in the set."""
    found: list[str] = []
    exact: str | None = None
    if cursor == 0 and await client.zscore(keys["failed"], query) is not None:
        exact = query
        found.append(query)
    ids = [str(i) for i in await client.zrevrange(keys["failed"], cursor, cursor + scan_limit - 1)]
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys[""] + job_id, "name")
    names = await pipe.execute() if ids else []
    next_cursor: int | None = None
    for position, (job_id, name) in enumerate(zip(ids, names, strict=True)):
        if len(found) >= limit:
            next_cursor = cursor + position
            break
        if job_id != exact and matches(query, job_id, name):
            found.append(job_id)
    else:
        if len(ids) == scan_limit:
            next_cursor = cursor + scan_limit
    scanned = (next_cursor - cursor) if next_cursor is not None else len(ids)
    return SearchResult(
        jobs=await summaries(client, keys, found), next_cursor=next_cursor, scanned_from=cursor, scanned=scanned
    )


def last_hour(meta: Sequence[Any], points: Sequence[Any], now_ms: int) -> int | None:
    """Events in the last 60 minutes (this one included) from BullMQ's metrics of one type.

    BullMQ keeps `count`, `prevTS`, `prevCount` in `<queue>:metrics:<type>` and pushes one data point
    per finished minute on `...:data` (newest first) when the first job of a new minute finishes:
    point k counts minute floor(prevTS / 60 s) - 1 - k, and count - prevCount is the minute of prevTS.
    """
    count, prev_ts, prev_count = (_int(value) for value in meta)
    if count is None or prev_ts is None:
        return None
    now_minute = now_ms // 60_000
    oldest = now_minute - (MINUTES_PER_HOUR - 1)
    last_minute = prev_ts // 60_000
    total = count - (prev_count or 0) if last_minute >= oldest else 0
    for k, point in enumerate(points):
        if last_minute - 1 - k < oldest:
            break
        total += _int(point) or 0
    return total


def _throughput(completed: int | None, failed: int | None) -> Throughput:
    """BullMQ creates a metrics hash at the first event of its kind: with one there, workers record
    metrics, and the missing kind is zero."""
    if completed is None and failed is None:
        return Throughput(None, None)
    return Throughput(completed or 0, failed or 0)


async def overview(client: aredis.Redis, prefix: str, queue_names: Sequence[str]) -> Overview:
    """Counts, throughput and workers for every queue, in a fixed number of round trips."""
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    for name in queue_names:
        keys = queue_counts.queue_keys(prefix, name)
        queue_counts.add_count_commands(pipe, keys)
        pipe.zcard(keys["completed"])
        for kind in ("completed", "failed"):
            pipe.hmget(keys[""] + f"metrics:{kind}", ["count", "prevTS", "prevCount"])
            pipe.lrange(keys[""] + f"metrics:{kind}:data", 0, MINUTES_PER_HOUR - 1)
    replies = await pipe.execute()
    now_ms = int(time.time() * 1000)
    per_queue = queue_counts.COMMANDS_PER_QUEUE + 5
    queues: list[QueueOverview] = []
    for index, name in enumerate(queue_names):
        chunk = replies[1 + index * per_queue : 1 + (index + 1) * per_queue]
        sample = queue_counts.read_counts(chunk[: queue_counts.COMMANDS_PER_QUEUE])
        completed_kept, completed_meta, completed_points, failed_meta, failed_points = chunk[
            queue_counts.COMMANDS_PER_QUEUE :
        ]
        queues.append(
            QueueOverview(
                name=name,
                counts={**sample.counts, "completed": int(completed_kept)},
                paused=sample.paused,
                throughput=_throughput(
                    last_hour(completed_meta, completed_points, now_ms), last_hour(failed_meta, failed_points, now_ms)
                ),
            )
        )
    workers, error = await registered_workers(client, prefix, queue_names)
    return Overview(
        queues=queues,
        workers=workers,
        workers_error=error,
        eviction_policy=str(replies[0].get("maxmemory_policy", "unknown")),
    )


def _worker_names(
    client_list: Sequence[dict[str, Any]], prefix: str, queue_names: Sequence[str]
) -> dict[str, set[str]]:
    """Worker name -> queues, from the connection names BullMQ workers set: `<prefix>:<base64 queue>:w:<name>`
    (Node BullMQ, and what Bull Board looks for) or `<prefix>:<queue>:w:<name>` (Python bullmq 3.4.4)."""
    wanted: dict[str, str] = {}
    for name in queue_names:
        wanted[f"{prefix}:{name}:w:"] = name
        wanted[f"{prefix}:{base64.b64encode(name.encode()).decode()}:w:"] = name
    workers: dict[str, set[str]] = {}
    for entry in client_list:
        connection_name = str(entry.get("name") or "")
        for marker, queue in wanted.items():
            if connection_name.startswith(marker):
                workers.setdefault(connection_name[len(marker) :], set()).add(queue)
    return workers


async def registered_workers(
    client: aredis.Redis, prefix: str, queue_names: Sequence[str]
) -> tuple[list[WorkerInfo], str | None]:
    try:
        client_list = await client.client_list()
    except ResponseError as err:  # e.g. NOPERM: an ACL user without CLIENT LIST
        return [], f"CLIENT LIST refused by Redis ({err}); workers cannot be listed"
    names = _worker_names(client_list, prefix, queue_names)
    ordered = sorted(names)
    pipe = client.pipeline(transaction=False)
    for name in ordered:
        pipe.get(contract.WORKER_REGISTRY_PREFIX + name)
        pipe.pttl(contract.WORKER_REGISTRY_PREFIX + name)
    replies = await pipe.execute() if ordered else []
    workers = []
    for index, name in enumerate(ordered):
        raw, ttl_ms = replies[2 * index], int(replies[2 * index + 1])
        record: dict[str, Any] = {}
        if raw:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                record = {}
        age = HEARTBEAT_TTL_SECONDS - ttl_ms / 1000 if raw and ttl_ms >= 0 else None
        workers.append(
            WorkerInfo(
                id=name,
                queues=tuple(sorted(names[name])),
                host=str(record.get("host") or name.rsplit(":", 1)[0]),
                pid=_int(record.get("pid")),
                concurrency=_int(record.get("concurrency")),
                in_flight=_int(record.get("inFlight")),
                reported_ready=record.get("ready") if isinstance(record.get("ready"), bool) else None,
                heartbeat_age_seconds=age,
            )
        )
    return workers, None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _json_text(raw: str | None) -> tuple[Any, str]:
    """(parsed value, text to show): JSON pretty-printed, anything else (a foreign producer's garbage)
    shown exactly as stored."""
    if raw is None:
        return None, ""
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None, raw
    return value, _pretty(value)


JOB_STATE_SETS: Final = ("completed", "failed", "delayed", "prioritized", "waiting-children")
JOB_STATE_LISTS: Final = (("active", "active"), ("waiting", "wait"), ("waiting", "paused"))


async def job_state(client: aredis.Redis, keys: dict[str, str], job_id: str) -> str:
    """Where the job is, in one round trip (what BullMQ's getState script checks, without the script)."""
    pipe = client.pipeline(transaction=False)
    for state in JOB_STATE_SETS:
        pipe.zscore(keys[state], job_id)
    for _, key in JOB_STATE_LISTS:
        pipe.lpos(keys[key], job_id)
    replies = await pipe.execute()
    for state, score in zip(JOB_STATE_SETS, replies, strict=False):
        if score is not None:
            return state
    for (state, _), position in zip(JOB_STATE_LISTS, replies[len(JOB_STATE_SETS) :], strict=True):
        if position is not None:
            return state
    return "unknown"


async def job_view(client: aredis.Redis, keys: dict[str, str], job_id: str) -> JobView | None:
    """One job with everything an operator needs, read from its raw hash so that a job a foreign
    producer wrote badly is still shown (as stored); data is cut at DATA_DISPLAY_CHARS for the page."""
    stored = await client.hgetall(keys[""] + job_id)  # the client decodes replies (dlq.redis_client)
    raw = {str(field): str(value) for field, value in stored.items()}
    if not raw:
        return None
    opts, opts_text = _json_text(raw.get("opts"))
    _, data_text = _json_text(raw.get("data"))
    stacktrace, stacktrace_text = _json_text(raw.get("stacktrace"))
    returnvalue, returnvalue_text = _json_text(raw.get("returnvalue"))
    traces = (
        [str(line) for line in stacktrace]
        if isinstance(stacktrace, list)
        else ([stacktrace_text] if stacktrace_text else [])
    )
    attempts = opts.get("attempts") if isinstance(opts, dict) else None
    return JobView(
        id=job_id,
        name=raw.get("name", ""),
        state=await job_state(client, keys, job_id),
        attempts=_int(attempts) or 1,
        attempts_made=_int(raw.get("atm")) or 0,
        attempts_started=_int(raw.get("ats")) or 0,
        timestamp=_int(raw.get("timestamp")),
        processed_on=_int(raw.get("processedOn")) or None,
        finished_on=_int(raw.get("finishedOn")) or None,
        failed_reason=raw.get("failedReason", ""),
        stacktrace=traces,
        data_text=data_text[:DATA_DISPLAY_CHARS],
        data_chars=len(data_text),
        returnvalue_text=returnvalue_text[:DATA_DISPLAY_CHARS] if returnvalue is not None else None,
        opts_text=opts_text[:DATA_DISPLAY_CHARS],
    )
