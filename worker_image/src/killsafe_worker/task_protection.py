"""ECS task scale-in protection: the worker protects its own task while it holds jobs.

ECS never stops a protected task for a scale-in or a deployment, so the autoscaler removes idle workers
and a busy one keeps its jobs. It is an optimisation on top of the shutdown budget, not a guarantee:
a task stopped anyway (protection expired or never set, the endpoint down) still gets SIGTERM and its
whole drain deadline, so nothing is lost either way.

    busy (a job in flight)     PUT ${ECS_AGENT_URI}/task-protection/v1/state
                               {"ProtectionEnabled": true, "ExpiresInMinutes": N}, renewed every minute
    idle for IDLE_RELEASE      {"ProtectionEnabled": false}
    busy for MAX_CONTINUOUS    let it go until the next idle moment: a saturated fleet would otherwise
                               hold a deployment (or a scale-in) forever; the drain budget covers its jobs

N = ceil(max_job_seconds / 60) + 1 minutes: a job held at any renewal finishes within max_job_seconds,
so protection outlives it even if every later renewal fails, and a worker whose event loop froze loses
its protection a minute or two later. The idle delay keeps a steady trickle of jobs from turning into a
protect/release call per job.

The calls run in their own task with a timeout; job processing never waits for them. A failing or slow
endpoint (missing IAM permission, agent restarting) is logged once, retried with back-off, and its
recovery logged. Off ECS (no ECS_AGENT_URI) nothing runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

STATE_PATH = "/task-protection/v1/state"
POLL_SECONDS = 0.5
RENEW_SECONDS = 60.0
IDLE_RELEASE_SECONDS = 10.0
MAX_CONTINUOUS_SECONDS = 900.0
REQUEST_TIMEOUT_SECONDS = 2.0
RETRY_FIRST_SECONDS = 5.0
RETRY_CAP_SECONDS = 60.0
MAX_EXPIRES_MINUTES = 2880
"""ECS's limit (48 h); 1 is its minimum."""


def expires_in_minutes(max_job_seconds: float) -> int:
    """Protection length: longer than any job held at a renewal, plus the renewal interval."""
    return min(MAX_EXPIRES_MINUTES, math.ceil(max_job_seconds / 60) + math.ceil(RENEW_SECONDS / 60))


class TaskProtection:
    """Follows `holding_jobs()` with the agent's protection state; run() is its own task, never raises."""

    def __init__(
        self,
        agent_uri: str,
        holding_jobs: Callable[[], bool],
        max_job_seconds: float,
        *,
        poll_seconds: float = POLL_SECONDS,
        idle_release_seconds: float = IDLE_RELEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        max_continuous_seconds: float = MAX_CONTINUOUS_SECONDS,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.url = agent_uri.rstrip("/") + STATE_PATH
        self.holding_jobs = holding_jobs
        self.minutes = expires_in_minutes(max_job_seconds)
        self.poll_seconds = poll_seconds
        self.idle_release_seconds = idle_release_seconds
        self.renew_seconds = renew_seconds
        self.max_continuous_seconds = max_continuous_seconds
        self.timeout_seconds = timeout_seconds
        self.protected = False
        """As last confirmed by the agent."""
        self.protected_at = -math.inf
        self.busy_since: float | None = None
        self.idle_since: float | None = None
        self.lapsed = False
        """Busy past MAX_CONTINUOUS: unprotected until the next idle moment."""
        self.retry_at = -math.inf
        self.retry_delay = RETRY_FIRST_SECONDS
        self.failing = False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.sleep(self.poll_seconds)
                try:
                    await self.step(session, time.monotonic())
                except Exception:  # never let protection bookkeeping end the task silently
                    log.exception("task protection step failed")

    def wanted(self, now: float) -> bool | None:
        """True/False: the call to make now; None: nothing to do."""
        if self.holding_jobs():
            self.idle_since = None
            self.busy_since = self.busy_since if self.busy_since is not None else now
            if now - self.busy_since >= self.max_continuous_seconds and not self.lapsed:
                self.lapsed = True
                log.info(
                    "busy for %d s without an idle moment: letting task protection go until idle, so a deployment "
                    "or scale-in can proceed (jobs in flight still get the drain deadline)",
                    int(self.max_continuous_seconds),
                )
            if self.lapsed:
                return False if self.protected else None
            if not self.protected or now - self.protected_at >= self.renew_seconds:
                return True
            return None
        self.busy_since = None
        self.lapsed = False
        self.idle_since = self.idle_since if self.idle_since is not None else now
        if self.protected and now - self.idle_since >= self.idle_release_seconds:
            return False
        return None

    async def step(self, session: aiohttp.ClientSession, now: float) -> None:
        enable = self.wanted(now)
        if enable is None or now < self.retry_at:
            return
        body: dict[str, Any] = {"ProtectionEnabled": enable}
        if enable:
            body["ExpiresInMinutes"] = self.minutes
        try:
            async with session.put(self.url, json=body) as response:
                text = await response.text()
                reply = _json(text)
                if response.status >= 300 or "error" in reply or reply.get("failure"):
                    raise RuntimeError(f"HTTP {response.status}: {text[:300]}")
        except (aiohttp.ClientError, TimeoutError, RuntimeError, OSError) as err:
            if not self.failing:
                log.warning(
                    "task protection call failed; jobs continue, retrying with back-off",
                    extra={"protectionEnabled": enable, "error": repr(err)},
                )
            self.failing = True
            self.retry_at = now + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, RETRY_CAP_SECONDS)
            return
        if self.failing:
            log.info("task protection calls succeed again")
        self.failing = False
        self.retry_delay = RETRY_FIRST_SECONDS
        self.retry_at = -math.inf
        self.protected = enable
        if enable:
            self.protected_at = now
        log.debug("task protection set", extra={"protectionEnabled": enable, "expiresInMinutes": self.minutes})


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
