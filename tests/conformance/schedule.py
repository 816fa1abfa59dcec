"""The chaos schedule: a pure function of the seed, so a failing run is replayed exactly.

`chaos_schedule(seed)` returns the planned events (offset from the start of the chaos window, kind,
target slot); the runner executes them in order. Events that take time (a rolling deploy, an OOM
kill, a SIGSTOP) push later ones back, so *executed* times differ a little from run to run; the plan
does not.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass

DEFAULT_SEED = 20261202
SEED_ENV = "KILLSAFE_CONFORMANCE_SEED"
WORKER_SLOTS = 3
OOM_SLOT = 0
"""The slot whose worker is moved into a memory cgroup and fed the memory hog (the only slot consuming
the hog queue, so no other worker can pick that job up first)."""
WINDOW_SECONDS = 60.0
MIN_GAP_SECONDS = 1.0
"""Planned events are at least this far apart, so one event's effect can be told from the next one's."""

KINDS: dict[str, int] = {
    "sigkill": 6,
    "sigterm": 4,
    "redis_restart": 2,
    "client_pause": 4,
    "sigstop": 1,
    "rolling_deploy": 1,
    "oom_kill": 1,
}
"""How many of each event one run plans (the issue's minimums: >= 2 Redis restarts, several pauses,
one SIGSTOP past the lock, one rolling deploy, one OOM kill)."""
REDIS_RESTART_MODES = ("shutdown", "crash")
"""Redis restarts alternate: SIGTERM (a SHUTDOWN: the AOF is flushed and fsynced) and SIGKILL (a crash:
only what `appendfsync always` already fsynced survives)."""
PAUSE_MS = 400


@dataclass(frozen=True)
class ChaosEvent:
    at: float
    """Seconds after the chaos window opens."""
    kind: str
    slot: int | None = None
    """The worker slot it targets (None for Redis-wide events)."""
    detail: str = ""
    """sigstop: seconds frozen; redis_restart: shutdown|crash; client_pause: milliseconds."""


def seed_from_env(environ: dict[str, str] | None = None) -> int:
    raw = (environ if environ is not None else dict(os.environ)).get(SEED_ENV, "").strip()
    return int(raw) if raw else DEFAULT_SEED


def chaos_schedule(seed: int, *, window: float = WINDOW_SECONDS, lock_duration_ms: int = 2000) -> list[ChaosEvent]:
    """Every planned event for `seed`, sorted by time; the same seed always yields the same list."""
    rng = random.Random(seed)
    kinds = [kind for kind, count in sorted(KINDS.items()) for _ in range(count)]
    times = _spread(rng, len(kinds), window)
    rng.shuffle(kinds)
    events: list[ChaosEvent] = []
    restarts = 0
    stop_seconds = round(2.5 * lock_duration_ms / 1000, 2)
    for at, kind in zip(times, kinds, strict=True):
        if kind in ("sigkill", "sigterm"):
            events.append(ChaosEvent(at, kind, rng.randrange(WORKER_SLOTS)))
        elif kind == "sigstop":
            slot = rng.choice([s for s in range(WORKER_SLOTS) if s != OOM_SLOT])
            events.append(ChaosEvent(at, kind, slot, f"{stop_seconds:g}"))
        elif kind == "oom_kill":
            events.append(ChaosEvent(at, kind, OOM_SLOT))
        elif kind == "redis_restart":
            events.append(ChaosEvent(at, kind, None, REDIS_RESTART_MODES[restarts % len(REDIS_RESTART_MODES)]))
            restarts += 1
        elif kind == "client_pause":
            events.append(ChaosEvent(at, kind, None, str(PAUSE_MS)))
        else:
            events.append(ChaosEvent(at, kind))
    return events


def _spread(rng: random.Random, count: int, window: float) -> list[float]:
    """`count` sorted times in [2, window) at least MIN_GAP_SECONDS apart."""
    span = window - 2.0 - MIN_GAP_SECONDS * (count - 1)
    if span <= 0:
        raise ValueError(f"{count} events do not fit in {window} s with {MIN_GAP_SECONDS} s gaps")
    raw = sorted(rng.uniform(0, span) for _ in range(count))
    return [round(2.0 + value + MIN_GAP_SECONDS * index, 3) for index, value in enumerate(raw)]


def counts(events: list[ChaosEvent]) -> Counter[str]:
    return Counter(event.kind for event in events)
