"""Prometheus metrics of one worker or web process, named by the contract so dashboards and alerts match.

Per-queue label children are created once up front: the per-job cost is a counter increment and a
histogram observation, never a label lookup or a Redis call. Each process has a registry of its own,
exposed by `exposition` (the worker's health server and the web app's metrics port alike).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from killsafe_worker import contract

WEB_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Requests take milliseconds; the slowest is bounded by the web app's 5 s enqueue timeout (plus a drain)."""
WEB_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted under their own name; any other token is `other` (bounded label values)."""
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass
class QueueMetrics:
    """Pre-bound children for one queue (cheap to update from the per-job path)."""

    completed: Counter
    failed: Counter
    duration: Histogram
    last_completed_at: float = 0.0
    """Read by the last-completed gauge at scrape time: a float store per job instead of a locked set."""

    def job_completed(self, seconds: float) -> None:
        self.completed.inc()
        self.duration.observe(seconds)
        self.last_completed_at = time.time()

    def last_completed(self) -> float:
        return self.last_completed_at

    def job_failed(self, seconds: float) -> None:
        self.failed.inc()
        self.duration.observe(seconds)


class WorkerMetrics:
    """Every contract metric, in a registry of its own (so tests and embedders never collide)."""

    def __init__(self, queues: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        completed = Counter(
            _base(contract.METRIC_JOBS_COMPLETED),
            "Jobs this worker completed.",
            ["queue"],
            registry=self.registry,
        )
        failed = Counter(
            _base(contract.METRIC_JOBS_FAILED),
            "Job attempts that failed in this worker (retried or not).",
            ["queue"],
            registry=self.registry,
        )
        duration = Histogram(
            contract.METRIC_JOB_DURATION,
            "Handler run time of finished job attempts.",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        last_completed = Gauge(
            contract.METRIC_LAST_JOB_COMPLETED,
            "Unix time of the last job this worker completed.",
            ["queue"],
            registry=self.registry,
        )
        self.timed_out = Counter(
            _base(contract.METRIC_JOBS_TIMED_OUT),
            "Job attempts stopped at KILLSAFE_MAX_JOB_SECONDS (failed or retried with reason timeout).",
            ["queue"],
            registry=self.registry,
        )
        self.interrupted = Counter(
            _base(contract.METRIC_JOBS_INTERRUPTED),
            "Jobs stopped before they finished and handed back for a retry, by reason.",
            ["queue", "reason"],
            registry=self.registry,
        )
        self.queue_jobs = Gauge(
            contract.METRIC_QUEUE_JOBS,
            "Jobs in the queue by state, sampled periodically from Redis.",
            ["queue", "state"],
            registry=self.registry,
        )
        self.worker_ready = Gauge(
            contract.METRIC_WORKER_READY, "1 while the readiness probe answers 200.", registry=self.registry
        )
        self.memory_pressure_restarts = Counter(
            _base(contract.METRIC_MEMORY_PRESSURE_RESTARTS),
            "1 once this process passed its memory drain threshold and drains to exit for a restart.",
            registry=self.registry,
        )
        self.memory = Gauge(
            contract.METRIC_WORKER_MEMORY,
            "Working set of the worker's cgroup (worker and job children; usage minus inactive file cache).",
            registry=self.registry,
        )
        self.memory_limit = Gauge(
            contract.METRIC_WORKER_MEMORY_LIMIT,
            "Memory limit the drain threshold applies to (0: unknown, no drain).",
            registry=self.registry,
        )
        self.queues: dict[str, QueueMetrics] = {}
        for queue in queues:
            bound = QueueMetrics(
                completed=completed.labels(queue), failed=failed.labels(queue), duration=duration.labels(queue)
            )
            last_completed.labels(queue).set_function(bound.last_completed)
            self.queues[queue] = bound
            self.timed_out.labels(queue)
            for reason in contract.INTERRUPT_REASONS:
                self.interrupted.labels(queue, reason)
            for state in contract.QUEUE_STATES:
                self.queue_jobs.labels(queue, state)

    def job_timed_out(self, queue: str) -> None:
        self.timed_out.labels(queue).inc()

    def job_interrupted(self, queue: str, reason: str) -> None:
        self.interrupted.labels(queue, reason).inc()

    def interrupted_total(self, reason: str) -> dict[str, float]:
        """Current interrupted-jobs counter per queue for `reason` (for the final shutdown log line)."""
        return {
            queue: self.registry.get_sample_value(contract.METRIC_JOBS_INTERRUPTED, {"queue": queue, "reason": reason})
            or 0.0
            for queue in self.queues
        }

    def set_queue_counts(self, queue: str, counts: Mapping[str, int]) -> None:
        for state, count in counts.items():
            self.queue_jobs.labels(queue, state).set(count)


class WebMetrics:
    """The web app's contract metrics (requests, enqueue outcomes, readiness), in a registry of its own."""

    def __init__(self, queue: str, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            _base(contract.METRIC_WEB_REQUESTS),
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            contract.METRIC_WEB_REQUEST_DURATION,
            "Time from a request reaching the app to its answer, by route template and method.",
            ["route", "method"],
            buckets=WEB_DURATION_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            contract.METRIC_WEB_REQUESTS_IN_FLIGHT, "Requests being served right now.", registry=self.registry
        ).set_function(in_flight)
        submitted = Counter(
            _base(contract.METRIC_WEB_JOBS_SUBMITTED),
            "POST /jobs requests by what became of them (enqueued, duplicate, conflict, invalid, draining, "
            "redis_unavailable).",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.outcomes = {outcome: submitted.labels(queue, outcome) for outcome in contract.WEB_JOB_OUTCOMES}
        self.ready = Gauge(
            contract.METRIC_WEB_READY, "1 while the readiness probe answers 200.", registry=self.registry
        )

    def request_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in WEB_METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def job_submitted(self, outcome: str) -> None:
        self.outcomes[outcome].inc()


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) of a registry in the Prometheus text format."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _base(counter_name: str) -> str:
    """prometheus-client appends `_total` to counters itself; the contract names the exposed series."""
    return counter_name.removesuffix("_total")
