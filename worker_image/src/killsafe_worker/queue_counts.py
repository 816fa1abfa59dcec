"""Counting a queue's jobs by state: one implementation for the worker's probe and the dashboard.

The worker's probe exports these counts as `killsafe_queue_jobs{queue,state}`, and the dashboard shows
the very same numbers, so both queue the same commands on a pipeline (O(1) each: LLEN/ZCARD/HMGET/PTTL,
never a range over a set) and read the replies with the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bullmq.queue_keys import QueueKeys

COMMANDS_PER_QUEUE = 8
"""How many replies `add_count_commands` adds to the pipeline for one queue."""


@dataclass(frozen=True)
class QueueSample:
    """One queue's counts by state (contract.QUEUE_STATES) and what liveness needs to know."""

    counts: dict[str, int]
    backlog: int
    """Waiting + prioritized: jobs a free worker would take now."""
    throttled: bool
    """The queue holds jobs back itself (paused, global concurrency reached, rate limited): not a stall."""
    paused: bool


def queue_keys(prefix: str, queue: str) -> dict[str, str]:
    """BullMQ's Redis keys of `queue` under `prefix` (Node's `prefix` option)."""
    keys: dict[str, str] = QueueKeys(prefix).getKeys(queue)
    return keys


def add_count_commands(pipe: Any, keys: dict[str, str]) -> None:
    """Queue COMMANDS_PER_QUEUE read-only commands on `pipe`; read their replies with `read_counts`."""
    pipe.llen(keys["wait"])
    pipe.llen(keys["paused"])
    pipe.zcard(keys["prioritized"])
    pipe.zcard(keys["delayed"])
    pipe.llen(keys["active"])
    pipe.zcard(keys["failed"])
    pipe.hmget(keys["meta"], ["paused", "concurrency"])
    pipe.pttl(keys["limiter"])


def read_counts(replies: Sequence[Any]) -> QueueSample:
    """The sample from one queue's COMMANDS_PER_QUEUE replies, in `add_count_commands` order."""
    wait, paused, prioritized, delayed, active, failed, (queue_paused, global_concurrency), limited_ms = replies
    counts = {
        "waiting": int(wait) + int(paused),
        "active": int(active),
        "delayed": int(delayed),
        "prioritized": int(prioritized),
        "failed": int(failed),
    }
    throttled = (
        queue_paused is not None
        or (global_concurrency is not None and int(active) >= int(global_concurrency))
        or int(limited_ms) > 0
    )
    return QueueSample(
        counts=counts,
        backlog=int(wait) + int(paused) + int(prioritized),
        throttled=throttled,
        paused=queue_paused is not None,
    )
