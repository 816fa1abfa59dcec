"""Health on ECS: the container healthCheck (liveness) and the ALB target group check, derived once.

ECS replaces a task whose essential container turns UNHEALTHY, and a service task an ALB reports
unhealthy. Both therefore probe liveness (`/livez`), never readiness: a Redis outage makes the worker
not ready, and restarting every task for it would be a crash loop. The worker's `/livez` already
applies the stall window; ECS only has to notice a failing `/livez` soon and without flapping:

    interval  = liveness_stall_seconds / 30, within 10..300 s (300 s stall: every 10 s)
    retries   = 3                      -> a stuck worker is replaced within stall + 3 x interval (<= 10 %)
    timeout   = 5 s                    (the health CLI gives up after 3 s: a clean failure, not a kill)
    startPeriod = the worker's Redis wait at start-up + 15 s slack (failures then do not count)

The ranges are ECS's (botocore's model does not carry them): interval 5-300, timeout 2-60,
retries 1-10, startPeriod 0-300.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.spec import WorkloadSpec

HEALTH_CHECK_RANGES: dict[str, tuple[int, int]] = {
    "interval": (5, 300),
    "timeout": (2, 60),
    "retries": (1, 10),
    "startPeriod": (0, 300),
}
INTERVAL_FLOOR_SECONDS = 10
RETRIES = 3
TIMEOUT_SECONDS = 5
CLI_TIMEOUT_SECONDS = 3
STARTUP_SLACK_SECONDS = 15
START_PERIOD_SECONDS = contract.DEFAULT_STARTUP_TIMEOUT_SECONDS + STARTUP_SLACK_SECONDS
WEB_INTERVAL_SECONDS = 10

HEALTH_COMMAND: tuple[str, ...] = (
    "CMD",
    "killsafe-worker",
    "healthcheck",
    "--probe",
    "live",
    "--timeout",
    str(CLI_TIMEOUT_SECONDS),
)
"""Exec form (the image has no shell): the image's own health CLI asks 127.0.0.1:$KILLSAFE_HEALTH_PORT/livez."""

ALB_HEALTHY_THRESHOLD = 2
ALB_UNHEALTHY_THRESHOLD = 3


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def worker_interval_seconds(spec: WorkloadSpec) -> int:
    stall = shutdown_budget(spec.worker).liveness_stall_seconds
    return _clamp(stall // 30, INTERVAL_FLOOR_SECONDS, HEALTH_CHECK_RANGES["interval"][1])


def container_health_check(interval: int) -> dict[str, Any]:
    return {
        "command": list(HEALTH_COMMAND),
        "interval": interval,
        "timeout": TIMEOUT_SECONDS,
        "retries": RETRIES,
        "startPeriod": START_PERIOD_SECONDS,
    }


def worker_health_check(spec: WorkloadSpec) -> dict[str, Any]:
    return container_health_check(worker_interval_seconds(spec))


def web_health_check() -> dict[str, Any]:
    """The web app serves /livez on its own port; the web container's env points the CLI there."""
    return container_health_check(WEB_INTERVAL_SECONDS)


def in_range(name: str, value: object) -> bool:
    low, high = HEALTH_CHECK_RANGES[name]
    return isinstance(value, int) and low <= value <= high
