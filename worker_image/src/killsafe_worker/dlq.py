"""`killsafe-worker dlq`: inspect and retry dead-lettered (failed) jobs, leaving an audit trail.

A retry is a decision someone made, so it needs --by and --reason, and each one appends who, why,
when and which job to the Redis stream contract.DLQ_AUDIT_STREAM (XADD; `dlq audit` reads it back).
A retry grants the job its full attempts again: job.retry("failed", resetAttemptsMade) plus a
reset of the stall counter. (Queue.retryJobs would give one more attempt only, and a job failed
for stalling would fail again at its first stall.)

Jobs named in KILLSAFE_NEVER_AUTO_RETRY (e.g. `charge`) may repeat a side effect that is not safe
to repeat: `retry-all` never retries them and `retry ID` refuses without --confirm.

--dry-run only reads: it prints what would be retried and writes nothing, not even an audit record
(the trail records changes, and a dry run can then run with read-only credentials).

Exit codes: 0 done; 1 nothing to do, refused, or failed (a one-line reason on stderr); 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aredis
from bullmq import Queue
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from killsafe_worker import contract
from killsafe_worker.config import SettingsError, key_prefix_from_env, queues_from_env, redis_url_from_env
from killsafe_worker.redis_auth import UrlFileCredentials, authenticate_with

EXIT_OK: Final = contract.EXIT_OK
EXIT_NOTHING_DONE: Final = 1
"""Nothing to retry, a refusal, a job that is not there or not failed, or Redis trouble."""
EXIT_USAGE: Final = contract.EXIT_USAGE

PROG: Final = "killsafe-worker dlq"
PAGE_SIZE: Final = 500
REASON_WIDTH: Final = 60
STALL_COUNTER_FIELD: Final = "stc"
"""BullMQ's per-job stall count (moveStalledJobsToWait HINCRBYs it); past maxStalledCount the job fails."""
_QUEUE_NAME: Final = re.compile(contract.QUEUE_NAME_PATTERN)


class UsageError(Exception):
    """A bad command line that argparse cannot see (e.g. an ambiguous queue); exit 2."""


class Refused(Exception):
    """Nothing was changed, on purpose or because there was nothing to change; exit 1."""


class UnauditedRetry(Exception):
    """The retry happened but its audit record could not be written; exit 1, loudly."""


@dataclass(frozen=True)
class DeadJob:
    """What an operator needs to decide on a failed job."""

    id: str
    name: str
    state: str
    attempts: int
    attempts_made: int
    failed_reason: str
    finished_on: int | None
    data: Any
    stacktrace: list[str]
    processed_by: str = ""
    """The worker that ran the last attempt (BullMQ's processedBy, set when the job was claimed)."""

    @classmethod
    def from_hash(cls, job_id: str, raw: Mapping[str, str], state: str = "failed") -> DeadJob:
        """From the job's Redis hash as stored, tolerating what bullmq's parser refuses: a job from a
        foreign producer that failed because it could not be parsed must still be inspectable."""
        opts = _json_or(raw.get("opts"), {})
        return cls(
            id=job_id,
            name=str(raw.get("name", "")),
            state=state,
            attempts=_int_or(opts.get("attempts") if isinstance(opts, dict) else None, 1) or 1,
            attempts_made=_int_or(raw.get("atm") or raw.get("attemptsMade"), 0),
            failed_reason=str(raw.get("failedReason", "")),
            finished_on=_int_or(raw.get("finishedOn"), 0) or None,
            data=_json_or(raw.get("data"), raw.get("data")),
            stacktrace=[str(line) for line in _as_list(_json_or(raw.get("stacktrace"), raw.get("stacktrace")))],
            processed_by=str(raw.get("pb", "")),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "attemptsMade": self.attempts_made,
            "failedReason": self.failed_reason,
            "finishedOn": self.finished_on,
        }

    def details(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "state": self.state,
            "attempts": self.attempts,
            "processedBy": self.processed_by or None,
            "data": self.data,
            "stacktrace": self.stacktrace,
        }


def _json_or(raw: str | None, default: Any) -> Any:
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def _int_or(raw: Any, default: int) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Operator:
    """Who asked for the retry and why; the claimed name plus where the command ran, for the trail."""

    by: str
    reason: str
    os_user: str
    host: str
    authenticated: str | None = None
    """How `by` was established when it is not merely claimed (the dashboard: "basic", "trusted-header")."""


def never_auto_retry_from_env(environ: Mapping[str, str]) -> frozenset[str]:
    raw = environ.get(contract.ENV_NEVER_AUTO_RETRY, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--queue", help=f"queue name (default: the only queue in {contract.ENV_QUEUES})")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    decision = argparse.ArgumentParser(add_help=False)
    decision.add_argument("--by", required=True, help="who decides the retry (recorded in the audit stream)")
    decision.add_argument("--reason", required=True, help="why (recorded in the audit stream)")
    decision.add_argument("--dry-run", action="store_true", help="show what would be retried; write nothing")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and retry failed jobs. Every retry grants full attempts and is audited in "
        f"the Redis stream {contract.DLQ_AUDIT_STREAM}.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,show,retry,retry-all,audit}")
    listing = commands.add_parser("list", parents=[common], help="failed jobs, newest first")
    listing.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
    show = commands.add_parser("show", parents=[common], help="one job with its failure reason and stacktrace")
    show.add_argument("job_id", metavar="ID")
    retry = commands.add_parser("retry", parents=[common, decision], help="retry one failed job")
    retry.add_argument("job_id", metavar="ID")
    retry.add_argument(
        "--confirm",
        action="store_true",
        help=f"required to retry a job whose name is in {contract.ENV_NEVER_AUTO_RETRY}",
    )
    commands.add_parser(
        "retry-all",
        parents=[common, decision],
        help=f"retry every failed job except names in {contract.ENV_NEVER_AUTO_RETRY}",
    )
    audit = commands.add_parser("audit", help="the retry audit trail, newest first")
    audit.add_argument("--queue", help="only retries in this queue")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
    return parser


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} must be at least 1")
    return value


def _queue_name(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """--queue, or the configured queue when there is exactly one: a retry never guesses between queues."""
    if args.queue is not None:
        if not _QUEUE_NAME.match(args.queue):
            raise UsageError(f"--queue {args.queue!r} is not a queue name ({contract.QUEUE_NAME_PATTERN})")
        return str(args.queue)
    configured = queues_from_env(environ)
    if len(configured) > 1:
        raise UsageError(f"{contract.ENV_QUEUES} lists {', '.join(configured)}: choose one with --queue")
    return configured[0]


def _one_line(text: str, width: int | None = None) -> str:
    flat = " ".join(text.split())
    if width is not None and len(flat) > width:
        return flat[: width - 3] + "..."
    return flat


def _when(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def redis_client(url: str, url_file: str | None = None) -> aredis.Redis:
    """A client that gives up in seconds, not bullmq's default minutes, when Redis is unreachable.

    With `url_file` (REDIS_URL_FILE) its credentials follow the file at every reconnect, as the worker's
    and the web app's do (redis_auth): the long-running dashboard picks up a rotated password by itself.
    """
    client = aredis.Redis.from_url(
        url,
        decode_responses=True,  # bullmq expects str replies
        socket_connect_timeout=5.0,
        socket_timeout=15.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), 3),
    )
    if url_file is not None:
        authenticate_with(client, UrlFileCredentials(url, url_file))
    return client


async def _failed_jobs(queue: Queue, client: aredis.Redis, limit: int | None = None) -> list[DeadJob]:
    """Failed jobs newest first, read in pages; `limit=None` snapshots all of them. Read as raw
    hashes (one pipeline per page), so one unparsable job cannot hide the others."""
    jobs: list[DeadJob] = []
    start = 0
    while limit is None or len(jobs) < limit:
        end = start + PAGE_SIZE - 1 if limit is None else min(start + PAGE_SIZE, limit) - 1
        ids = [str(job_id) for job_id in await client.zrevrange(queue.toKey("failed"), start, end)]
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(queue.toKey(job_id))
        hashes = await pipe.execute() if ids else []
        jobs.extend(DeadJob.from_hash(job_id, raw) for job_id, raw in zip(ids, hashes, strict=True) if raw)
        if len(ids) < end - start + 1:
            break
        start = end + 1
    return jobs


async def list_failed(queue: Queue, client: aredis.Redis, limit: int, as_json: bool) -> int:
    jobs = await _failed_jobs(queue, client, limit)
    total = int(await queue.getFailedCount())
    if as_json:
        _print_json({"queue": queue.name, "total": total, "jobs": [job.summary() for job in jobs]})
        return EXIT_OK
    if not jobs:
        print(f"no failed jobs in queue {queue.name}")
        return EXIT_OK
    _print_table(
        ["ID", "NAME", "ATTEMPTS", "FINISHED", "FAILED REASON"],
        [
            [
                job.id,
                job.name,
                str(job.attempts_made),
                _when(job.finished_on),
                _one_line(job.failed_reason, REASON_WIDTH),
            ]
            for job in jobs
        ],
    )
    if total > len(jobs):
        print(f"({len(jobs)} of {total} failed jobs shown; use --limit)")
    return EXIT_OK


async def load_job(queue: Queue, client: aredis.Redis, job_id: str) -> DeadJob:
    """The job as stored (raw hash: a foreign producer's unparsable job is still shown), with its state."""
    raw = {str(key): str(value) for key, value in (await client.hgetall(queue.toKey(job_id))).items()}
    if not raw:
        raise Refused(f"job {job_id} not found in queue {queue.name}")
    return DeadJob.from_hash(job_id, raw, state=str(await queue.getJobState(job_id)))


async def show(queue: Queue, client: aredis.Redis, job_id: str, as_json: bool) -> int:
    job = await load_job(queue, client, job_id)
    if as_json:
        _print_json({"queue": queue.name, **job.details()})
        return EXIT_OK
    print(f"job:           {job.id} ({job.name}) in queue {queue.name}")
    print(f"state:         {job.state}")
    print(f"attempts made: {job.attempts_made} of {job.attempts}")
    print(f"finished:      {_when(job.finished_on)}")
    print(f"processed by:  {job.processed_by or '-'}")
    print("failed reason: " + (job.failed_reason or "-").replace("\n", "\n" + " " * 15))
    print(f"data:          {json.dumps(job.data, ensure_ascii=False, default=str)}")
    for number, trace in enumerate(job.stacktrace, start=1):
        print(f"--- stacktrace {number} of {len(job.stacktrace)} ---")
        print(trace.rstrip())
    return EXIT_OK


async def retry_and_audit(
    queue: Queue, client: aredis.Redis, job: DeadJob, operator: Operator, *, command: str, confirmed: bool
) -> str:
    """Retry with full attempts, then append the audit record; returns the stream entry id.

    The record is written after the retry succeeded, so the trail never shows a retry that did not
    happen; if Redis fails in between, the error says the retry happened but is unaudited.
    """
    try:
        bull_job = await queue.getJob(job.id)
    except ValueError as err:  # json: the hash itself cannot be parsed, a retry would fail it again
        raise Refused(f"job {job.id} cannot be parsed ({err}); fix or remove it, a retry would fail again") from None
    await client.hdel(queue.toKey(job.id), STALL_COUNTER_FIELD)
    if bull_job is None:
        raise Refused(f"job {job.id} disappeared from queue {queue.name} before it could be retried")
    try:
        await bull_job.retry("failed", {"resetAttemptsMade": True, "resetAttemptsStarted": True})
    except TypeError as err:  # bullmq's "not in the failed state" / "missing key" (reprocessJob -3 / -1)
        raise Refused(f"job {job.id} is no longer failed (retried or removed meanwhile): {err}") from None
    record: dict[FieldT, EncodableT] = {
        "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "by": operator.by,
        "reason": operator.reason,
        "command": command,
        "queue": queue.name,
        "job_id": job.id,
        "job_name": job.name,
        "previous_failed_reason": job.failed_reason,
        "previous_attempts_made": str(job.attempts_made),
        "attempts_granted": str(job.attempts),
        "confirmed": "true" if confirmed else "false",
        "os_user": operator.os_user,
        "host": operator.host,
    }
    if operator.authenticated is not None:
        record["authenticated"] = operator.authenticated
    try:
        return str(await client.xadd(contract.DLQ_AUDIT_STREAM, record))
    except (RedisError, OSError) as err:
        raise UnauditedRetry(f"job {job.id} WAS retried but its audit record could not be written: {err}") from err


def check_retryable(
    job: DeadJob, never_auto_retry: frozenset[str], confirm: bool, how_to_confirm: str = "add --confirm"
) -> None:
    """Refused unless the job is failed, and, for a never-auto-retry name, the retry is confirmed."""
    if job.state != "failed":
        raise Refused(f"job {job.id} is {job.state}, not failed: nothing to retry")
    if job.name in never_auto_retry and not confirm:
        raise Refused(
            f"refusing to retry job {job.id}: {job.name!r} is in {contract.ENV_NEVER_AUTO_RETRY} "
            f"(a retry may repeat its side effect); check it did not happen, then {how_to_confirm}"
        )


async def retry_one(
    queue: Queue,
    client: aredis.Redis,
    job_id: str,
    operator: Operator,
    *,
    never_auto_retry: frozenset[str],
    confirm: bool,
    dry_run: bool,
    as_json: bool,
) -> int:
    job = await load_job(queue, client, job_id)
    check_retryable(job, never_auto_retry, confirm)
    if dry_run:
        if as_json:
            _print_json({"dryRun": True, "queue": queue.name, "wouldRetry": [job.summary()], "skipped": []})
        else:
            print(f"dry run: would retry job {job.id} ({job.name}) with {job.attempts} attempts; nothing written")
        return EXIT_OK
    entry = await retry_and_audit(queue, client, job, operator, command="retry", confirmed=confirm)
    if as_json:
        _print_json({"dryRun": False, "queue": queue.name, "retried": [job.summary()], "auditIds": [entry]})
    else:
        print(f"retried job {job.id} ({job.name}) with {job.attempts} attempts; audit entry {entry}")
    return EXIT_OK


async def retry_all(
    queue: Queue,
    client: aredis.Redis,
    operator: Operator,
    *,
    never_auto_retry: frozenset[str],
    dry_run: bool,
    as_json: bool,
) -> int:
    """Retry a snapshot of the failed set; never-auto-retry names are listed as skipped, never retried."""
    jobs = await _failed_jobs(queue, client)
    eligible = [job for job in jobs if job.name not in never_auto_retry]
    skipped = [job for job in jobs if job.name in never_auto_retry]
    retried: list[DeadJob] = []
    vanished: list[str] = []
    audit_ids: list[str] = []
    if not dry_run:
        for job in eligible:
            try:
                entry = await retry_and_audit(queue, client, job, operator, command="retry-all", confirmed=False)
            except Refused:
                vanished.append(job.id)
                continue
            audit_ids.append(entry)
            retried.append(job)
    done = eligible if dry_run else retried
    if as_json:
        _print_json(
            {
                "dryRun": dry_run,
                "queue": queue.name,
                ("wouldRetry" if dry_run else "retried"): [job.summary() for job in done],
                "skipped": [{**job.summary(), "why": contract.ENV_NEVER_AUTO_RETRY} for job in skipped],
                "noLongerFailed": vanished,
                "auditIds": audit_ids,
            }
        )
    else:
        verb = "would retry" if dry_run else "retried"
        for job in done:
            print(f"{verb} {job.id} ({job.name})")
        for job in skipped:
            print(f"skipped {job.id} ({job.name}): in {contract.ENV_NEVER_AUTO_RETRY}; use `retry {job.id} --confirm`")
        for job_id in vanished:
            print(f"skipped {job_id}: no longer failed")
        suffix = "; nothing written" if dry_run else ""
        print(f"{'dry run: ' if dry_run else ''}{verb} {len(done)}, skipped {len(skipped) + len(vanished)}{suffix}")
    if not done:
        print(f"{PROG}: nothing to retry in queue {queue.name}", file=sys.stderr)
        return EXIT_NOTHING_DONE
    return EXIT_OK


async def read_audit(
    client: aredis.Redis,
    limit: int,
    *,
    queue_filter: str | None = None,
    job_id: str | None = None,
    max_scanned: int | None = None,
) -> list[dict[str, str]]:
    """Newest first; with a filter, pages back through the stream until `limit` records match (or
    `max_scanned` records were read, for a page that must answer quickly)."""
    records: list[dict[str, str]] = []
    upper = "+"
    scanned = 0
    while len(records) < limit and (max_scanned is None or scanned < max_scanned):
        count = PAGE_SIZE if max_scanned is None else min(PAGE_SIZE, max_scanned - scanned)
        page = await client.xrevrange(contract.DLQ_AUDIT_STREAM, max=upper, min="-", count=count) or []
        scanned += len(page)
        for entry_id, fields in page:
            record = {"id": str(entry_id), **{str(key): str(value) for key, value in (fields or {}).items()}}
            if (queue_filter is None or record.get("queue") == queue_filter) and (
                job_id is None or record.get("job_id") == job_id
            ):
                records.append(record)
                if len(records) == limit:
                    break
        if len(page) < count:
            break
        upper = f"({page[-1][0]!s}"
    return records


async def show_audit(client: aredis.Redis, queue_filter: str | None, limit: int, as_json: bool) -> int:
    """Newest first; with a queue filter, pages back through the stream until `limit` records match."""
    records = await read_audit(client, limit, queue_filter=queue_filter)
    if as_json:
        _print_json(records)
        return EXIT_OK
    if not records:
        print("no retries recorded" + (f" for queue {queue_filter}" if queue_filter else ""))
        return EXIT_OK
    _print_table(
        ["AT", "BY", "QUEUE", "JOB", "NAME", "REASON", "PREVIOUS FAILURE"],
        [
            [
                record.get("at", "-"),
                record.get("by", "-"),
                record.get("queue", "-"),
                record.get("job_id", "-"),
                record.get("job_name", "-"),
                _one_line(record.get("reason", ""), 40),
                _one_line(record.get("previous_failed_reason", ""), 40),
            ]
            for record in records
        ],
    )
    return EXIT_OK


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    client = redis_client(redis_url_from_env(environ))
    try:
        if args.command == "audit":
            if args.queue is not None and not _QUEUE_NAME.match(args.queue):
                raise UsageError(f"--queue {args.queue!r} is not a queue name ({contract.QUEUE_NAME_PATTERN})")
            return await show_audit(client, args.queue, args.limit, args.json)
        queue = Queue(_queue_name(args, environ), {"connection": client, "prefix": key_prefix_from_env(environ)})
        if args.command == "list":
            return await list_failed(queue, client, args.limit, args.json)
        if args.command == "show":
            return await show(queue, client, args.job_id, args.json)
        operator = Operator(by=args.by, reason=args.reason, os_user=os_user(), host=socket.gethostname())
        never = never_auto_retry_from_env(environ)
        if args.command == "retry":
            return await retry_one(
                queue,
                client,
                args.job_id,
                operator,
                never_auto_retry=never,
                confirm=args.confirm,
                dry_run=args.dry_run,
                as_json=args.json,
            )
        return await retry_all(queue, client, operator, never_auto_retry=never, dry_run=args.dry_run, as_json=args.json)
    finally:
        await client.aclose()


def os_user() -> str:
    """The operating-system user running the retry, for the audit record (the dashboard's too)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (common in containers)
        return str(os.getuid())


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """`killsafe-worker dlq ...` (argv is everything after `dlq`); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse already printed usage and the error (2), or --help (0)
        return int(exit_.code or 0)
    for option in ("by", "reason"):
        if hasattr(args, option) and not getattr(args, option).strip():
            print(f"{PROG}: --{option} must not be blank", file=sys.stderr)
            return EXIT_USAGE
    try:
        return asyncio.run(run(args, os.environ if environ is None else environ))
    except (UsageError, SettingsError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (Refused, UnauditedRetry) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_NOTHING_DONE
    except (RedisError, OSError) as err:
        print(f"{PROG}: Redis error: {type(err).__name__}: {_one_line(str(err), 200)}", file=sys.stderr)
        return EXIT_NOTHING_DONE
