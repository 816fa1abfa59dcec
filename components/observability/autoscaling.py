"""The queue-autoscaling signal, defined once: which Redis keys count, and how they become workers.

The signal is read from Redis itself, never from the workers' /metrics, so it exists when zero workers
run (scale from zero). For each queue it counts the jobs a worker would hold or take now:

    backlog = LLEN <prefix>:<queue>:wait          (waiting, a list)
            + ZCARD <prefix>:<queue>:prioritized  (waiting with a priority, a sorted set)
            + LLEN <prefix>:<queue>:active        (being processed: their workers are busy, keep them)
            + (ZCARD <prefix>:<queue>:delayed > 0 ? 1 : 0)

Delayed jobs count as one: BullMQ promotes a delayed job that came due from inside a running worker,
so with zero workers a due job would wait forever; one worker per queue with delayed jobs promotes
them, and their number says nothing about how many workers are needed (they may be due next week).
Counting active jobs makes scale-in wait until work is done rather than until the queue is empty.

desired workers = ceil(sum of backlogs / target_backlog_per_worker), within [min, max]; activation
(0 -> 1) as soon as the sum is above 0. Kubernetes evaluates it with KEDA (one `redis` trigger per key,
combined by `advanced.scalingModifiers`); another target evaluates the same keys its own way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from killsafe.spec import WorkerSpec, WorkloadSpec

State = Literal["waiting", "prioritized", "active", "delayed"]
RedisType = Literal["list", "zset"]

KEY_SUFFIXES: dict[State, tuple[str, RedisType]] = {
    "waiting": ("wait", "list"),
    "prioritized": ("prioritized", "zset"),
    "active": ("active", "list"),
    "delayed": ("delayed", "zset"),
}
"""BullMQ's key (after `<prefix>:<queue>:`) and Redis type for each state the signal counts."""
PRESENCE_STATES: frozenset[State] = frozenset({"delayed"})
"""States that add one worker when non-empty instead of their job count."""


@dataclass(frozen=True)
class BacklogKey:
    queue_index: int
    queue: str
    state: State
    key: str
    redis_type: RedisType

    @property
    def name(self) -> str:
        """An identifier for formulas (queue names may hold `-` and `.`): `q0_waiting`."""
        return f"q{self.queue_index}_{self.state}"

    @property
    def presence_only(self) -> bool:
        return self.state in PRESENCE_STATES


def backlog_keys(spec: WorkloadSpec) -> list[BacklogKey]:
    """Every key the signal reads, queue by queue, in KEY_SUFFIXES order."""
    prefix = spec.redis.key_prefix
    return [
        BacklogKey(index, queue, state, f"{prefix}:{queue}:{suffix}", redis_type)
        for index, queue in enumerate(spec.worker.queues)
        for state, (suffix, redis_type) in KEY_SUFFIXES.items()
    ]


def backlog(keys: list[BacklogKey], counts: dict[str, int]) -> int:
    """The signal from each key's count (`counts` by key name); a missing key counts 0."""
    total = 0
    for key in keys:
        count = counts.get(key.key, 0)
        total += (1 if count > 0 else 0) if key.presence_only else count
    return total


def formula(keys: list[BacklogKey]) -> str:
    """The same sum as an expression (expr-lang, as KEDA's scalingModifiers evaluate it)."""
    terms = [f"({key.name} > 0 ? 1 : 0)" if key.presence_only else key.name for key in keys]
    return " + ".join(terms)


def desired_workers(worker: WorkerSpec, total_backlog: int) -> int:
    """What the autoscaler converges to for a backlog (the HPA's AverageValue arithmetic)."""
    autoscaling = worker.autoscaling
    if autoscaling is None:
        return worker.replicas
    wanted = math.ceil(total_backlog / worker.target_backlog_per_worker)
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, wanted))
