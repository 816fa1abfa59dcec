"""Job handlers: the registry (job name -> async handler) and the built-in demo workload.

Users replace the registry with their own (`run_from_environment(environ, handlers=...)` or
KILLSAFE_HANDLERS=package.module:REGISTRY). A handler gets a JobContext and returns the job's
result; raising fails the attempt (BullMQ retries it if attempts remain).

A job may run more than once (a worker killed after the side effect but before the job was marked
completed), so handlers with side effects guard them with `JobContext.record_side_effect()`: a
Redis SET NX on the job's idempotency key, which lets exactly one run perform the effect.

The key is the producer's explicit `data.idempotency_key` when there is one (the web app always sets
it: one logical operation, however many jobs carry the key), else the job instance:
`<job id>@<creation time in ms>`. Not the bare id: ids are reused (Queue.obliterate(), a removed
job, custom ids after their retention), and a new job with an old id must run its side effect.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bullmq.custom_errors import UnrecoverableError
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from killsafe_worker import contract
from killsafe_worker.config import SettingsError
from killsafe_worker.sandbox import run_in_child

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_FIELD = contract.IDEMPOTENCY_DATA_FIELD
"""job.data field holding the idempotency key (the web app sets it and also uses it as the jobId)."""
IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600
"""Markers outlive any retry or dead-letter replay window, then expire (Redis runs noeviction)."""
SIDE_EFFECTS_KEPT = 100_000
"""The demo side-effect list is trimmed to this many entries so it cannot grow without bound."""

# One round trip, atomic: the side effect (an RPUSH here) happens only if the marker is new.
_RECORD_ONCE_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
  return 1
end
return 0
"""


_record_once_scripts: weakref.WeakKeyDictionary[Redis, AsyncScript] = weakref.WeakKeyDictionary()


def _record_once_script(redis: Redis) -> AsyncScript:
    """The record-once script registered on `redis` (EVALSHA: the script body is sent only once)."""
    script = _record_once_scripts.get(redis)
    if script is None:
        script = _record_once_scripts[redis] = redis.register_script(_RECORD_ONCE_LUA)
    return script


def idempotency_marker_key(queue: str, idempotency_key: str, key_prefix: str = contract.DEFAULT_KEY_PREFIX) -> str:
    """Redis key of the SET NX marker; per prefix and queue because job ids repeat across queues."""
    return f"{contract.IDEMPOTENCY_KEY_PREFIX}{key_prefix}:{queue}:{idempotency_key}"


def idempotency_key_of(job: Any) -> str:
    """`job.data["idempotency_key"]` when present, else this job instance: `<id>@<creation ms>`."""
    data = job.data
    if isinstance(data, Mapping):
        key = data.get(IDEMPOTENCY_KEY_FIELD)
        if isinstance(key, str | int) and str(key):
            return str(key)
    return f"{job.id}@{job.timestamp}"


@dataclass(frozen=True)
class JobContext:
    """What a handler gets: the bullmq Job, its queue, and a Redis client for idempotency markers."""

    job: Any
    queue: str
    redis: Redis
    worker_id: str
    key_prefix: str = contract.DEFAULT_KEY_PREFIX

    @property
    def data(self) -> Any:
        return self.job.data

    @property
    def idempotency_key(self) -> str:
        return idempotency_key_of(self.job)

    async def record_side_effect(self) -> bool:
        """Record this job's side effect once per idempotency key; False if a previous run already did."""
        marker = json.dumps(
            {
                "key": self.idempotency_key,
                "queue": self.queue,
                "jobId": self.job.id,
                "attempt": self.job.attemptsMade + 1,
                "worker": self.worker_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "ts": time.time(),
            },
            separators=(",", ":"),
        )
        recorded = await _record_once_script(self.redis)(
            keys=[
                idempotency_marker_key(self.queue, self.idempotency_key, self.key_prefix),
                contract.SIDE_EFFECTS_LIST,
            ],
            args=[marker, IDEMPOTENCY_TTL_SECONDS, SIDE_EFFECTS_KEPT],
        )
        if not recorded:
            log.info("side effect already recorded by an earlier run; skipped")
        return bool(recorded)


Handler = Callable[[JobContext], Awaitable[Any]]
HandlerRegistry = Mapping[str, Handler]


def _number(data: Any, field: str, default: float | None = None, minimum: float = 0.0) -> float:
    """A numeric field of job.data; an invalid value fails the job for good (a retry cannot fix it)."""
    value = data.get(field, default) if isinstance(data, Mapping) else default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise UnrecoverableError(f"job data field {field!r} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


async def sleep_handler(ctx: JobContext) -> dict[str, Any]:
    """{"seconds": float}: wait (without blocking the loop), then record the side effect once."""
    seconds = _number(ctx.data, "seconds", 1.0)
    await asyncio.sleep(seconds)
    recorded = await ctx.record_side_effect()
    return {"slept": seconds, "recorded": recorded}


async def echo_handler(ctx: JobContext) -> Any:
    """Return the job's data (no side effect, so no idempotency round trip)."""
    return ctx.data


async def fail_handler(ctx: JobContext) -> None:
    """{"message": str}: always raise, to exercise retries and the dead-letter workflow."""
    message = ctx.data.get("message", "failed on purpose") if isinstance(ctx.data, Mapping) else "failed"
    raise RuntimeError(str(message))


def burn_cpu(seconds: float, allocate_mib: float) -> dict[str, Any]:
    """Runs in the job's child process: optionally hold `allocate_mib` of memory, spin for `seconds`."""
    held = bytearray(int(allocate_mib * 1024 * 1024)) if allocate_mib else b""
    deadline = time.monotonic() + seconds
    iterations = 0
    while time.monotonic() < deadline:
        iterations += 1
    return {"iterations": iterations, "pid": os.getpid(), "held_bytes": len(held)}


async def cpu_handler(ctx: JobContext) -> dict[str, Any]:
    """{"seconds": float, "allocate_mib"?: float, "memory_limit_mib"?: float}: burn CPU in a child.

    The event loop stays free; a crash, kill or OOM of the child fails only this job.
    """
    seconds = _number(ctx.data, "seconds", 1.0)
    allocate_mib = _number(ctx.data, "allocate_mib", 0.0)
    limit_mib = ctx.data.get("memory_limit_mib") if isinstance(ctx.data, Mapping) else None
    limit_bytes = int(_number(ctx.data, "memory_limit_mib", minimum=1) * 1024 * 1024) if limit_mib else None
    result: dict[str, Any] = await run_in_child(
        burn_cpu,
        seconds,
        allocate_mib,
        memory_limit_bytes=limit_bytes,
        on_start=lambda pid: log.info("job child process started", extra={"childPid": pid}),
    )
    result["recorded"] = await ctx.record_side_effect()
    return result


DEFAULT_HANDLERS: HandlerRegistry = MappingProxyType(
    {"sleep": sleep_handler, "echo": echo_handler, "fail": fail_handler, "cpu": cpu_handler}
)
"""The demo workload (also what the tests enqueue)."""


def handlers_from_env(environ: Mapping[str, str]) -> HandlerRegistry:
    """KILLSAFE_HANDLERS=package.module:NAME (a mapping of job name to handler), else the demo handlers."""
    spec = environ.get(contract.ENV_HANDLERS, "").strip()
    if not spec:
        return DEFAULT_HANDLERS
    module_name, _, attribute = spec.partition(":")
    expected = "package.module:NAME naming a mapping of job name -> async handler"
    if not module_name or not attribute:
        raise SettingsError(contract.ENV_HANDLERS, spec, expected)
    try:
        registry = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise SettingsError(contract.ENV_HANDLERS, spec, f"{expected} ({err})") from err
    if not isinstance(registry, Mapping) or not all(callable(handler) for handler in registry.values()):
        raise SettingsError(contract.ENV_HANDLERS, spec, expected)
    return registry
