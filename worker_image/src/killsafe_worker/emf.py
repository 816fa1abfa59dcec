"""The contract metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout, for ECS.

On ECS the awslogs driver ships stdout to CloudWatch Logs, which turns every EMF line into metric data
points: no agent, no sidecar, no PutMetricData permission. The ECS target switches it on by setting
KILLSAFE_EMF_NAMESPACE; without it (every other target) this module writes nothing.

AWS's `aws-embedded-metrics` library builds and validates each line (namespace, <= 30 dimensions per set,
<= 100 metrics per line, values as top-level members, `_aws.Timestamp`). Its own `MetricsLogger` is not
used: it resolves an "environment" (probing instance metadata over HTTP) and picks a sink on its own. Here
the lines are written with one synchronous `write` + `flush` on the event loop thread, a few KiB a minute:
the awslogs driver runs in non-blocking mode, so stdout never stalls the worker.

What is published, every `EMF_INTERVAL_SECONDS` at the middle of each wall-clock minute (so a 60 s
CloudWatch period holds exactly one sample per worker), and once more when the worker exits:

    dimensions        metrics (names exactly as in the contract)
    Queue             killsafe_jobs_completed_total, killsafe_jobs_failed_total, killsafe_jobs_timed_out_total
                      (each the increase since the previous line: a CloudWatch Sum is the increase over a
                      period, whatever the number of workers or their restarts), killsafe_job_duration_seconds
                      (mean of the attempts finished since the previous line, when any finished),
                      killsafe_last_job_completed_timestamp_seconds (when one completed)
    Queue, State      killsafe_queue_jobs (the sampled gauge; every worker reports the same value)
    Queue, Reason     killsafe_jobs_interrupted_total (increase)
    Tier=worker       killsafe_worker_ready (1/0; not in the exit line, so a minute never counts a worker twice),
                      killsafe_memory_pressure_restarts_total (increase, only when non-zero: the exit line)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aws_embedded_metrics.logger.metrics_context import MetricsContext
from aws_embedded_metrics.serializers.log_serializer import LogSerializer

from killsafe_worker import contract
from killsafe_worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

QUEUE, STATE, REASON = (contract.EMF_DIMENSIONS[label] for label in ("queue", "state", "reason"))
COUNT, SECONDS, NONE = "Count", "Seconds", "None"
QUEUE_COUNTERS = (contract.METRIC_JOBS_COMPLETED, contract.METRIC_JOBS_FAILED, contract.METRIC_JOBS_TIMED_OUT)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def seconds_until_next_flush(now: float, interval: float = contract.EMF_INTERVAL_SECONDS) -> float:
    """Until the next middle of an interval (hh:mm:30 for 60 s): far from CloudWatch's period edges."""
    offset = interval / 2
    wait = (offset - now) % interval
    return wait if wait > 0 else interval


class EmfPublisher:
    """Turns a worker's Prometheus registry into EMF lines; counters become increases since the last flush."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        namespace: str,
        write: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.namespace = namespace
        self._write = write or _write_stdout
        self._clock = clock
        self._previous: Samples = {}
        self._failing = False

    async def run(self) -> None:
        """Flush in the middle of every minute until cancelled (never raises: metrics must not stop jobs)."""
        while True:
            await asyncio.sleep(seconds_until_next_flush(self._clock()))
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        try:
            for line in self.lines(final=final):
                self._write(line + "\n")
        except Exception as err:  # a closed stdout, a value the validator refuses: log once, keep working
            if not self._failing:
                log.warning("EMF metrics could not be written; retrying every minute", extra={"error": repr(err)})
            self._failing = True
            return
        if self._failing:
            log.info("EMF metrics written again")
        self._failing = False

    def lines(self, *, final: bool = False) -> list[str]:
        """One flush: the EMF lines, counters as increases since the previous call."""
        samples = _samples(self.metrics)
        timestamp = datetime.fromtimestamp(self._clock(), UTC)
        lines: list[str] = []

        def emit(dimensions: dict[str, str], values: list[tuple[str, float, str]]) -> None:
            context = MetricsContext(namespace=self.namespace)
            context.set_dimensions([dimensions], use_default=False)
            context.set_timestamp(timestamp)
            for name, value, unit in values:
                context.put_metric(name, value, unit)
            lines.extend(LogSerializer.serialize(context))

        for queue in self.metrics.queues:
            labels = (("queue", queue),)
            values = [(name, self._increase(samples, name, labels), COUNT) for name in QUEUE_COUNTERS]
            finished = self._increase(samples, contract.METRIC_JOB_DURATION + "_count", labels)
            run_time = self._increase(samples, contract.METRIC_JOB_DURATION + "_sum", labels)
            if finished > 0:
                values.append((contract.METRIC_JOB_DURATION, run_time / finished, SECONDS))
            last = samples.get((contract.METRIC_LAST_JOB_COMPLETED, labels), 0.0)
            if last > 0:
                values.append((contract.METRIC_LAST_JOB_COMPLETED, last, SECONDS))
            emit({QUEUE: queue}, values)
            for state in contract.QUEUE_STATES:
                depth = samples.get((contract.METRIC_QUEUE_JOBS, (("queue", queue), ("state", state))), 0.0)
                emit({QUEUE: queue, STATE: state}, [(contract.METRIC_QUEUE_JOBS, depth, COUNT)])
            for reason in contract.INTERRUPT_REASONS:
                interrupted = self._increase(
                    samples, contract.METRIC_JOBS_INTERRUPTED, (("queue", queue), ("reason", reason))
                )
                emit({QUEUE: queue, REASON: reason}, [(contract.METRIC_JOBS_INTERRUPTED, interrupted, COUNT)])
        restarts = self._increase(samples, contract.METRIC_MEMORY_PRESSURE_RESTARTS, ())
        if restarts:  # the exit's final line carries it: the drain is often shorter than a flush interval
            tier = {contract.EMF_TIER_DIMENSION: contract.EMF_WORKER_TIER}
            emit(tier, [(contract.METRIC_MEMORY_PRESSURE_RESTARTS, restarts, COUNT)])
        if not final:
            ready = samples.get((contract.METRIC_WORKER_READY, ()), 0.0)
            emit({contract.EMF_TIER_DIMENSION: contract.EMF_WORKER_TIER}, [(contract.METRIC_WORKER_READY, ready, NONE)])
        return lines

    def _increase(self, samples: Samples, name: str, labels: tuple[tuple[str, str], ...]) -> float:
        """A counter's growth since the previous flush (from 0 at process start, so nothing is lost)."""
        key = (name, labels)
        now = samples.get(key, 0.0)
        before = self._previous.get(key, 0.0)
        self._previous[key] = now
        return max(0.0, now - before)


def _samples(metrics: WorkerMetrics) -> Samples:
    """Every sample of the registry by (sample name, sorted labels)."""
    found: Samples = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return found


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
