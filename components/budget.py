"""The shutdown budget: one pure function from the job budget to every deadline on every layer.

    kill deadline  = max_job_seconds + drain_margin_seconds
                     -> Kubernetes terminationGracePeriodSeconds, ECS stopTimeout, systemd TimeoutStopSec
    drain deadline = kill deadline - STOP_RESERVE_SECONDS
                     -> the worker's own KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS; past it the worker hands
                        unfinished jobs back to the queue and exits before the platform kills it
    lock timing    -> lock lifetime and stalled-check interval; a SIGKILLed worker's job is re-run
                      after at most lock_duration + stalled_interval
    liveness stall -> max(300 s, kill deadline) unless set: never shorter than the longest job

Because drain_margin_seconds >= STOP_RESERVE_SECONDS, the drain deadline is never shorter than the
longest job: a job claimed just before SIGTERM still finishes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from killsafe import contract
from killsafe.spec import WebSpec, WorkerSpec, WorkloadSpec

STOP_RESERVE_SECONDS = 5
"""Time the worker keeps, after its drain deadline, to hand jobs back and close connections."""
WEB_STOP_RESERVE_SECONDS = 5


@dataclass(frozen=True)
class ShutdownBudget:
    """Every worker deadline, derived once. All values in seconds unless the name says otherwise."""

    max_job_seconds: int
    drain_margin_seconds: int
    kill_deadline_seconds: int
    drain_deadline_seconds: int
    lock_duration_ms: int
    stalled_interval_ms: int
    liveness_stall_seconds: int

    @property
    def rerun_after_kill_seconds(self) -> float:
        """Upper bound for a SIGKILLed worker's job to be picked up again by another worker."""
        return (self.lock_duration_ms + self.stalled_interval_ms) / 1000


@dataclass(frozen=True)
class WebBudget:
    """Web tier deadlines: stop routing first (preStop), then drain in-flight requests."""

    prestop_seconds: int
    request_drain_seconds: int
    kill_deadline_seconds: int


def shutdown_budget(worker: WorkerSpec) -> ShutdownBudget:
    """Derive every worker deadline from the job budget and the drain margin."""
    kill = worker.max_job_seconds + worker.drain_margin_seconds
    stall = worker.liveness_stall_seconds or max(contract.DEFAULT_LIVENESS_STALL_SECONDS, kill)
    return ShutdownBudget(
        max_job_seconds=worker.max_job_seconds,
        drain_margin_seconds=worker.drain_margin_seconds,
        kill_deadline_seconds=kill,
        drain_deadline_seconds=kill - STOP_RESERVE_SECONDS,
        lock_duration_ms=worker.lock_duration_seconds * 1000,
        stalled_interval_ms=worker.stalled_interval_seconds * 1000,
        liveness_stall_seconds=stall,
    )


def web_budget(web: WebSpec) -> WebBudget:
    """Derive the web tier's deadlines: preStop delay + request drain + a reserve."""
    return WebBudget(
        prestop_seconds=web.prestop_seconds,
        request_drain_seconds=web.max_request_seconds,
        kill_deadline_seconds=web.prestop_seconds + web.max_request_seconds + WEB_STOP_RESERVE_SECONDS,
    )


def budget_summary(spec: WorkloadSpec) -> dict[str, Any]:
    """Every deadline of the workload as plain data (a component's `shutdown_budget` output)."""
    worker = shutdown_budget(spec.worker)
    summary: dict[str, Any] = asdict(worker)
    summary["rerun_after_kill_seconds"] = worker.rerun_after_kill_seconds
    if spec.web is not None:
        summary["web"] = asdict(web_budget(spec.web))
    return summary
