"""Startup, readiness and liveness probes for web and worker, and the rollout's minReadySeconds: derived
here, once, from the contract's paths and the spec's CPU and job budget.

What each probe means (the worker's /livez and /readyz are defined in killsafe.contract):

    startup    GET /livez until the process answers at all: interpreter start, imports, health
               server listening. It never waits for Redis, so a Redis outage at start cannot fail it.
               Its window scales with the CPU limit (imports are CPU-bound and a low limit throttles
               them); once it passes, the kubelet switches to the two probes below.
    readiness  GET /readyz: Redis reachable, worker registered, eviction policy safe (web: Redis
               reachable, not draining). Failing it only marks the pod not ready: it is never
               restarted for it, and a rollout waits (maxUnavailable 0) instead of retiring old pods.
    liveness   GET /livez: the event loop answers and the queue is not stalled (jobs wait, capacity
               is free, none processed for KILLSAFE_LIVENESS_STALL_SECONDS). It never looks at Redis:
               a Redis outage, at start or later, makes a pod not ready, never restarted. The kubelet
               restarts only after /livez failed for the whole liveness window, which is at least the
               job lock: a worker stuck that long has lost its job locks already (another worker
               re-runs those jobs), so the restart loses nothing more.

minReadySeconds: a new pod must stay ready for one full readiness failure window plus a period before
it counts as available, so a pod that crashes or turns unready right after start stops the rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from killsafe import contract

STARTUP_CPU_SECONDS = 3.0
"""CPU time a process may use to start listening: the reference worker used 0.75 s (imports included,
measured in a memory cgroup here, ~0.8 s wall to /livez), times four for slower nodes and cold caches."""
STARTUP_MIN_WINDOW_SECONDS = 30
STARTUP_PERIOD_SECONDS = 2
"""Short: the kubelet notices within ~2 s that the process listens and hands over to liveness."""
PROBE_TIMEOUT_SECONDS = 3
READINESS_PERIOD_SECONDS = 5
READINESS_FAILURES = 2
"""10 s of failed /readyz takes a pod out of endpoints; the worker re-checks Redis every 2 s itself."""
LIVENESS_PERIOD_SECONDS = 10
LIVENESS_TIMEOUT_SECONDS = 5
LIVENESS_MIN_WINDOW_SECONDS = 30
"""A liveness restart needs /livez to fail this long at least: a GC pause or a throttled CPU is not a reason."""


@dataclass(frozen=True)
class ProbeSet:
    """The kubelet's view of one container: three probes on one port, and the rollout's minReadySeconds."""

    port: int
    startup_window_seconds: int
    liveness_window_seconds: int

    @property
    def startup_failures(self) -> int:
        return math.ceil(self.startup_window_seconds / STARTUP_PERIOD_SECONDS)

    @property
    def liveness_failures(self) -> int:
        return math.ceil(self.liveness_window_seconds / LIVENESS_PERIOD_SECONDS)

    @property
    def min_ready_seconds(self) -> int:
        return READINESS_PERIOD_SECONDS * (READINESS_FAILURES + 1)

    def manifest(self) -> dict[str, Any]:
        """The container's startupProbe, readinessProbe and livenessProbe."""
        return {
            "startupProbe": http_probe(
                self.port, contract.LIVE_PATH, STARTUP_PERIOD_SECONDS, PROBE_TIMEOUT_SECONDS, self.startup_failures
            ),
            "readinessProbe": http_probe(
                self.port, contract.READY_PATH, READINESS_PERIOD_SECONDS, PROBE_TIMEOUT_SECONDS, READINESS_FAILURES
            ),
            "livenessProbe": http_probe(
                self.port, contract.LIVE_PATH, LIVENESS_PERIOD_SECONDS, LIVENESS_TIMEOUT_SECONDS, self.liveness_failures
            ),
        }


def http_probe(port: int, path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
    """No `host`: the kubelet probes the pod IP, IPv4 or IPv6, whichever the cluster gives the pod."""
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def startup_window_seconds(cpu_millicores: int, cpu_seconds: float = STARTUP_CPU_SECONDS) -> int:
    """`cpu_seconds` of start-up stretched by the CPU limit (CFS throttling), never under the minimum."""
    throttled = cpu_seconds * 1000 / cpu_millicores
    return max(STARTUP_MIN_WINDOW_SECONDS, math.ceil(throttled))


def probe_set(
    port: int, cpu_millicores: int, lock_duration_seconds: int = 0, startup_cpu_seconds: float = STARTUP_CPU_SECONDS
) -> ProbeSet:
    """The probes of a container listening on `port`; `lock_duration_seconds` for a worker, and the
    CPU time its process needs to start when that is not STARTUP_CPU_SECONDS (the dashboard)."""
    return ProbeSet(
        port=port,
        startup_window_seconds=startup_window_seconds(cpu_millicores, startup_cpu_seconds),
        liveness_window_seconds=max(LIVENESS_MIN_WINDOW_SECONDS, lock_duration_seconds),
    )
