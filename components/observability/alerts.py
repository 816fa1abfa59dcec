"""The alerts, defined once as data over the worker contract's metrics.

Each `Alert` says, in emitter-neutral terms (`Condition`s: metric, filter, transform, how replicas
combine, comparison, threshold, window, `for`), what it measures, so a CloudWatch-alarm emitter needs
no PromQL; and it carries the PromQL expression the Prometheus emitters (`prometheus.py`: the
Kubernetes PrometheusRule, a plain rules file) use as is. Thresholds come from the spec
(`alerts.*`); windows come from `AlertTiming`, which the spec derives and tests shorten.

Where a query finds a target's series (namespace and scrape job on Kubernetes, a static job on a VM)
is the target's business: it passes `Selectors`. Alerts over kube-state-metrics, node_exporter's
systemd collector or a Redis exporter are emitted only when the target has that source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from killsafe import contract
from killsafe.spec import AlertsSpec, WorkloadSpec

Severity = Literal["critical", "warning"]
Source = Literal["worker", "kube-state-metrics", "node-exporter", "redis-exporter"]
Transform = Literal["value", "increase", "growth", "present"]
Combine = Literal["sum", "max", "count", "ratio"]
Comparison = Literal[">", "<", "=="]

# Series that are not ours: kube-state-metrics and redis_exporter (their documented names).
KSM_RESTARTS = "kube_pod_container_status_restarts_total"
KSM_LAST_TERMINATED = "kube_pod_container_status_last_terminated_reason"
KSM_DEPLOYMENT_REPLICAS = "kube_deployment_spec_replicas"
NODE_SYSTEMD_RESTARTS = "node_systemd_service_restart_total"
"""node_exporter's systemd collector, with --collector.systemd --collector.systemd.enable-restarts-metrics:
systemd's own NRestarts of each service unit (Restart= restarts, not manual ones)."""
REDIS_MEMORY_USED = "redis_memory_used_bytes"
REDIS_MEMORY_MAX = "redis_memory_max_bytes"
REDIS_CONFIG = "redis_config_key_value"
REDIS_EVICTED = "redis_evicted_keys_total"

WAITING_STATES = ("waiting", "prioritized")
"""Jobs a free worker would take now (delayed jobs are not due; active ones are taken)."""


@dataclass(frozen=True)
class Condition:
    """One clause of an alert; an alert fires while all its conditions hold (for `Alert.for_seconds`).

    `transform`: `value` (the gauge as is), `increase` (counter increase over `window_seconds`, counter
    resets of restarted processes handled), `growth` (value now minus value `window_seconds` ago),
    `present` (the series existed `window_seconds` ago: the source has been watched that long).
    `combine`: how the series of several replicas or processes become one number per `group_by`
    (`max` for gauges every replica reports alike, `sum` for per-process counters, `count` of the
    series whose value is 1 (a per-process boolean gauge), `ratio` of `metric` over `divisor`).
    """

    metric: str
    transform: Transform
    combine: Combine
    comparison: Comparison
    threshold: float
    window_seconds: int | None = None
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Only series whose label has one of these values (`!`-prefixed values are excluded instead)."""
    group_by: tuple[str, ...] = ()
    divisor: str | None = None
    compare_to: str | None = None
    """When set, the platform's own number replaces `threshold` where it has one (e.g. the autoscaler's
    desired worker count); `threshold` is then the floor."""


@dataclass(frozen=True)
class Alert:
    """One alert, for every emitter. `{queue}`, `{reason}`, `{pod}`, `{name}`, `{instance}` and `{value}` in
    the texts are placeholders each emitter fills its own way (Prometheus: `{{ $labels.queue }}`)."""

    name: str
    severity: Severity
    summary: str
    description: str
    first_action: str
    source: Source
    conditions: tuple[Condition, ...]
    for_seconds: int
    expr: str
    """PromQL, for the Prometheus emitters."""
    labels: Mapping[str, str] = field(default_factory=dict)
    match: Literal["all", "any"] = "all"
    """Whether every condition must hold (the usual) or any one of them."""

    @property
    def runbook(self) -> str:
        """The runbook page's file name (package data in killsafe/observability/runbooks/)."""
        return f"{self.name}.md"


@dataclass(frozen=True)
class AlertTiming:
    """Every window and `for` duration, in seconds. `for_spec` gives the production values; the
    end-to-end test passes seconds-long ones so real alerts fire within a minute."""

    stalled_seconds: int
    worker_down_seconds: int
    dead_letter_growing_seconds: int
    scrape_interval_seconds: int = 30
    confirm_seconds: int = 60
    """`for` of the threshold alerts: a condition must hold this long (one bad evaluation never pages)."""
    event_window_seconds: int = 3600
    """The window the per-hour thresholds count over (failed, interrupted, timed-out jobs, restarts)."""
    dead_letter_step_seconds: int = 900
    oom_window_seconds: int = 600
    redis_memory_seconds: int = 300

    @classmethod
    def for_spec(cls, alerts: AlertsSpec, scrape_interval_seconds: int = 30) -> AlertTiming:
        growing = alerts.dead_letter_growing_minutes * 60
        return cls(
            stalled_seconds=alerts.stalled_minutes * 60,
            worker_down_seconds=alerts.worker_down_minutes * 60,
            dead_letter_growing_seconds=growing,
            scrape_interval_seconds=scrape_interval_seconds,
            dead_letter_step_seconds=min(900, growing // 4),
        )

    @property
    def presence_window_seconds(self) -> int:
        """Long enough to hold a few samples whatever the scrape timing."""
        return 4 * self.scrape_interval_seconds


@dataclass(frozen=True)
class Selectors:
    """PromQL label matchers (`a="b",c=~"d"`) that find each source's series on a target."""

    worker: str
    """The workers' own /metrics series (every contract metric, and their `up`)."""
    web: str | None = field(default=None, kw_only=True)
    """The web app's /metrics series (its metrics port), when the workload has a web tier and the target
    scrapes it (keyword-only: the positional order of the other sources stays as it was)."""
    expected_workers: str | None = None
    """PromQL for the platform's desired worker count (autoscaling); None: the spec's fixed count."""
    kube_state: str | None = None
    """kube-state-metrics series of the worker containers (Kubernetes only)."""
    redis: str | None = None
    """redis_exporter series of the queue's Redis, when an exporter exists."""
    systemd_units: str | None = None
    """node_exporter systemd-collector series of the worker units (systemd, when the hosts run one)."""


def duration(seconds: int) -> str:
    """A PromQL/Prometheus duration: `1h`, `5m`, `90s`."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def matchers(**labels: str) -> str:
    """`namespace="emails",job="emails/emails-worker"` from keyword arguments (values escaped)."""
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _sel(base: str, extra: str = "") -> str:
    return "{" + ",".join(part for part in (base, extra) if part) + "}"


def _in(values: tuple[str, ...]) -> str:
    return "|".join(values)


def alerts(spec: WorkloadSpec, timing: AlertTiming, selectors: Selectors) -> list[Alert]:
    """Every alert for the workload whose source the target has, in a stable order."""
    if not spec.alerts.enabled:
        return []
    found = [*_worker_alerts(spec, timing, selectors)]
    if selectors.kube_state is not None:
        found += _kube_state_alerts(spec, timing, selectors.kube_state)
    if selectors.systemd_units is not None:
        found += _systemd_unit_alerts(spec, timing, selectors.systemd_units)
    if selectors.redis is not None:
        found += _redis_alerts(spec, timing, selectors.redis)
    extra = {"workload": spec.name, **spec.alerts.labels}
    return [replace(a, labels={"severity": a.severity, **extra, **a.labels}) for a in found]


def _worker_alerts(spec: WorkloadSpec, timing: AlertTiming, selectors: Selectors) -> list[Alert]:
    s = selectors.worker
    t = spec.alerts
    window = duration(timing.event_window_seconds)
    stalled = duration(timing.stalled_seconds)
    waiting = _sel(s, f'state=~"{_in(WAITING_STATES)}"')
    failed_state = _sel(s, 'state="failed"')
    expected = str(spec.worker.min_workers)
    if selectors.expected_workers is not None:
        expected = f"({selectors.expected_workers} or vector({spec.worker.min_workers}))"
    return [
        Alert(
            name="QueueStalled",
            severity="critical",
            summary="Queue {queue}: jobs wait and none completed for " + _human(timing.stalled_seconds),
            description="Jobs are waiting in queue {queue} but no worker completed any job for "
            f"{_human(timing.stalled_seconds)}: workers are stuck, busy with jobs that never end, or "
            "cannot claim jobs.",
            first_action="open the worker logs for the last job each worker started, and check /livez; "
            "a worker whose handler hangs is stopped at max_job_seconds",
            source="worker",
            conditions=(
                Condition(
                    contract.METRIC_QUEUE_JOBS,
                    "value",
                    "max",
                    ">",
                    0,
                    labels={"state": WAITING_STATES},
                    group_by=("queue",),
                ),
                Condition(
                    contract.METRIC_JOBS_COMPLETED,
                    "increase",
                    "sum",
                    "==",
                    0,
                    window_seconds=timing.stalled_seconds,
                    group_by=("queue",),
                ),
                Condition(
                    contract.METRIC_JOBS_COMPLETED,
                    "present",
                    "max",
                    "==",
                    1,
                    window_seconds=timing.stalled_seconds,
                    group_by=("queue",),
                ),
            ),
            for_seconds=timing.confirm_seconds,
            # Gauges: every replica reports the same queue, so `max` (not sum). Completions: the sum over
            # every process that ran in the window (a restarted worker's old series still counts).
            # The last clause waits until the queue has been watched for the whole window, so a fresh
            # worker that has completed nothing fires once the window has passed, not at its start.
            expr=(
                f"(sum by (queue) (max by (queue, state) ({contract.METRIC_QUEUE_JOBS}{waiting})) > 0)\n"
                f"unless on (queue) "
                f"(sum by (queue) (increase({contract.METRIC_JOBS_COMPLETED}{_sel(s)}[{stalled}])) > 0)\n"
                f"and on (queue) (max by (queue) (present_over_time("
                f"{contract.METRIC_JOBS_COMPLETED}{_sel(s)}[{duration(timing.presence_window_seconds)}] "
                f"offset {stalled})))"
            ),
        ),
        Alert(
            name="WorkerDown",
            severity="critical",
            summary="Fewer workers ready than expected (ready: {value})",
            description="Fewer worker processes report ready than the deployment expects, for "
            f"{_human(timing.worker_down_seconds)}; with none ready, no job is processed (and "
            "QueueStalled cannot fire, because its series are gone with the workers).",
            first_action="look at why workers are not running or not ready: crash loops, scheduling, "
            "or Redis unreachable (readiness fails while Redis is down)",
            source="worker",
            conditions=(
                Condition(
                    contract.METRIC_WORKER_READY,
                    "value",
                    "count",
                    "<",
                    spec.worker.min_workers,
                    compare_to="desired_workers" if selectors.expected_workers is not None else None,
                ),
            ),
            for_seconds=timing.worker_down_seconds,
            expr=f"(count({contract.METRIC_WORKER_READY}{_sel(s)} == 1) or vector(0)) < {expected}",
        ),
        Alert(
            name="FailedJobsHigh",
            severity="warning",
            summary="Queue {queue}: {value} job attempts failed in " + _last(timing.event_window_seconds),
            description=f"More than {t.failed_jobs_per_hour} job attempts failed in queue {{queue}} in "
            f"{_last(timing.event_window_seconds)} (alerts.failed_jobs_per_hour).",
            first_action="list the failures with `killsafe-worker dlq list --queue {queue}` and read the "
            "most common failedReason; retry with `dlq retry` once the cause is fixed",
            source="worker",
            conditions=(
                Condition(
                    contract.METRIC_JOBS_FAILED,
                    "increase",
                    "sum",
                    ">",
                    t.failed_jobs_per_hour,
                    window_seconds=timing.event_window_seconds,
                    group_by=("queue",),
                ),
            ),
            for_seconds=timing.confirm_seconds,
            # increase() per series handles a restarted worker's counter reset; sum adds each process once.
            expr=f"sum by (queue) (increase({contract.METRIC_JOBS_FAILED}{_sel(s)}[{window}])) "
            f"> {t.failed_jobs_per_hour}",
        ),
        Alert(
            name="DeadLetterGrowing",
            severity="warning",
            summary="Queue {queue}: the failed set keeps growing ({value} jobs)",
            description="Jobs that used all their attempts keep landing in the failed set of queue "
            f"{{queue}}: it has been larger than {_human(timing.dead_letter_step_seconds)} earlier for "
            f"{_human(timing.dead_letter_growing_seconds)}. Nobody is handling them.",
            first_action="run `killsafe-worker dlq list --queue {queue}`, fix the cause, then "
            "`dlq retry-all` (jobs in KILLSAFE_NEVER_AUTO_RETRY need `dlq retry ID --confirm`)",
            source="worker",
            conditions=(
                Condition(
                    contract.METRIC_QUEUE_JOBS,
                    "growth",
                    "max",
                    ">",
                    0,
                    window_seconds=timing.dead_letter_step_seconds,
                    labels={"state": ("failed",)},
                    group_by=("queue",),
                ),
            ),
            for_seconds=timing.dead_letter_growing_seconds,
            expr=f"max by (queue) ({contract.METRIC_QUEUE_JOBS}{failed_state})\n> max by (queue) "
            f"({contract.METRIC_QUEUE_JOBS}{failed_state} offset {duration(timing.dead_letter_step_seconds)})",
        ),
        Alert(
            name="JobsInterrupted",
            severity="warning",
            summary="Queue {queue}: {value} jobs interrupted ({reason})",
            description=f"More than {t.interrupted_jobs_per_hour} jobs of queue {{queue}} were stopped "
            f"before they finished in {_last(timing.event_window_seconds)}, reason {{reason}}: "
            "shutdown_deadline means the drain budget is shorter than the jobs; child_crashed/child_oom "
            "a job's child process died; lock_lost a worker froze past its lock.",
            first_action="for shutdown_deadline raise worker.max_job_seconds or drain_margin_seconds (or make "
            "jobs shorter); for child_oom raise worker.memory_mib; see the runbook for the other reasons",
            source="worker",
            conditions=(
                Condition(
                    contract.METRIC_JOBS_INTERRUPTED,
                    "increase",
                    "sum",
                    ">",
                    t.interrupted_jobs_per_hour,
                    window_seconds=timing.event_window_seconds,
                    group_by=("queue", "reason"),
                ),
            ),
            for_seconds=timing.confirm_seconds,
            expr=f"sum by (queue, reason) (increase({contract.METRIC_JOBS_INTERRUPTED}{_sel(s)}[{window}])) "
            f"> {t.interrupted_jobs_per_hour}",
        ),
        Alert(
            name="JobsTimedOut",
            severity="warning",
            summary="Queue {queue}: {value} job attempts stopped at max_job_seconds",
            description=f"More than {t.timed_out_jobs_per_hour} job attempts of queue {{queue}} ran past "
            f"worker.max_job_seconds ({spec.worker.max_job_seconds} s) in "
            f"{_last(timing.event_window_seconds)} and were stopped (reason timeout).",
            first_action="find the slow jobs in the worker logs (reason timeout) and either fix the handler "
            "or raise worker.max_job_seconds (the whole shutdown budget follows)",
            source="worker",
            conditions=(
                Condition(
                    contract.METRIC_JOBS_TIMED_OUT,
                    "increase",
                    "sum",
                    ">",
                    t.timed_out_jobs_per_hour,
                    window_seconds=timing.event_window_seconds,
                    group_by=("queue",),
                ),
            ),
            for_seconds=timing.confirm_seconds,
            expr=f"sum by (queue) (increase({contract.METRIC_JOBS_TIMED_OUT}{_sel(s)}[{window}])) "
            f"> {t.timed_out_jobs_per_hour}",
        ),
    ]


def _kube_state_alerts(spec: WorkloadSpec, timing: AlertTiming, k: str) -> list[Alert]:
    t = spec.alerts
    window = duration(timing.event_window_seconds)
    oom_window = duration(timing.oom_window_seconds)
    pod_labels = ("namespace", "pod", "container")
    oom = _sel(k, 'reason="OOMKilled"')
    return [
        Alert(
            name="WorkerRestarting",
            severity="warning",
            summary="Worker pod {pod} restarted {value} times in " + _last(timing.event_window_seconds),
            description=f"A worker container restarted more than {t.restarts_per_hour} times in "
            f"{_human(timing.event_window_seconds)} (alerts.restarts_per_hour): it crashes, fails its "
            "liveness probe or is OOM-killed. Each restart interrupts its jobs (they re-run after the lock expires).",
            first_action="`kubectl logs --previous` on the pod and `kubectl describe pod` for the last "
            "termination reason",
            source="kube-state-metrics",
            conditions=(
                Condition(
                    KSM_RESTARTS,
                    "increase",
                    "sum",
                    ">",
                    t.restarts_per_hour,
                    window_seconds=timing.event_window_seconds,
                    group_by=pod_labels,
                ),
            ),
            for_seconds=0,
            expr=f"sum by (namespace, pod, container) (increase({KSM_RESTARTS}{_sel(k)}[{window}])) "
            f"> {t.restarts_per_hour}",
        ),
        Alert(
            name="WorkerOOMKilled",
            severity="warning",
            summary="Worker pod {pod} was OOM-killed",
            description="A worker container was killed for exceeding its memory limit "
            f"({spec.worker.memory_mib} MiB) in {_last(timing.oom_window_seconds)}. On cgroup v2 the "
            "kernel kills the whole container, so every job in flight in it was interrupted.",
            first_action="raise worker.memory_mib or lower concurrency_per_queue (memory per in-flight job "
            "is memory_mib / (concurrency_per_queue x queues))",
            source="kube-state-metrics",
            conditions=(
                Condition(KSM_LAST_TERMINATED, "value", "max", "==", 1, labels={"reason": ("OOMKilled",)}),
                Condition(KSM_RESTARTS, "increase", "sum", ">", 0, window_seconds=timing.oom_window_seconds),
            ),
            for_seconds=0,
            expr=f"(max by (namespace, pod, container) ({KSM_LAST_TERMINATED}{oom}) == 1)\n"
            f"and on (namespace, pod, container) "
            f"(sum by (namespace, pod, container) (increase({KSM_RESTARTS}{_sel(k)}[{oom_window}])) > 0)",
        ),
    ]


def _systemd_unit_alerts(spec: WorkloadSpec, timing: AlertTiming, u: str) -> list[Alert]:
    """WorkerRestarting on VMs: systemd counts each Restart= of a unit (a crash, a watchdog abort, a
    MemoryMax OOM kill). No WorkerOOMKilled here: node_exporter has no per-unit OOM series (the journal
    says `Failed with result 'oom-kill'`), and an OOM-killed worker is restarted, so this alert covers it."""
    t = spec.alerts
    window = duration(timing.event_window_seconds)
    return [
        Alert(
            name="WorkerRestarting",
            severity="warning",
            summary="Worker unit {name} on {instance} restarted {value} times in " + _last(timing.event_window_seconds),
            description=f"A worker unit was restarted by systemd more than {t.restarts_per_hour} times in "
            f"{_human(timing.event_window_seconds)} (alerts.restarts_per_hour): it crashes, misses its "
            "watchdog or is OOM-killed at MemoryMax. Each restart interrupts its jobs (they re-run after the lock "
            "expires).",
            first_action="`journalctl -u {name}` on the host for the exit status or result (watchdog, oom-kill, "
            "exit-code) and the last lines before it",
            source="node-exporter",
            conditions=(
                Condition(
                    NODE_SYSTEMD_RESTARTS,
                    "increase",
                    "sum",
                    ">",
                    t.restarts_per_hour,
                    window_seconds=timing.event_window_seconds,
                    group_by=("instance", "name"),
                ),
            ),
            for_seconds=0,
            expr=f"sum by (instance, name) (increase({NODE_SYSTEMD_RESTARTS}{_sel(u)}[{window}])) "
            f"> {t.restarts_per_hour}",
        ),
    ]


def _redis_alerts(spec: WorkloadSpec, timing: AlertTiming, r: str) -> list[Alert]:
    t = spec.alerts
    safe = _in(tuple(sorted(contract.SAFE_MAXMEMORY_POLICIES)))
    unsafe_policy = _sel(r, f'key="maxmemory-policy",value!~"{safe}"')
    return [
        Alert(
            name="RedisMemoryHigh",
            severity="critical",
            summary="Redis uses {value}% of its maxmemory",
            description=f"The queue's Redis uses more than {t.redis_memory_percent}% of maxmemory "
            f"(alerts.redis_memory_percent) for {_human(timing.redis_memory_seconds)}. With noeviction, "
            "a full Redis refuses writes: producers cannot enqueue and workers cannot complete jobs.",
            first_action="find what fills it (`redis-cli --bigkeys`; completed/failed sets that are never "
            "trimmed are the usual cause) and raise redis.memory_mib if the load is real",
            source="redis-exporter",
            conditions=(
                Condition(
                    REDIS_MEMORY_USED,
                    "value",
                    "ratio",
                    ">",
                    t.redis_memory_percent / 100,
                    divisor=REDIS_MEMORY_MAX,
                ),
            ),
            for_seconds=timing.redis_memory_seconds,
            expr=f"100 * {REDIS_MEMORY_USED}{_sel(r)} / ({REDIS_MEMORY_MAX}{_sel(r)} > 0) > {t.redis_memory_percent}",
        ),
        Alert(
            name="RedisEvictionPolicyUnsafe",
            severity="critical",
            summary="Redis may evict queue keys (maxmemory-policy or evicted keys)",
            description="The queue's Redis has a maxmemory-policy other than "
            f"{' or '.join(sorted(contract.SAFE_MAXMEMORY_POLICIES))}, or evicted keys recently: jobs "
            "and their locks can silently disappear. The workers refuse readiness under such a policy.",
            first_action="set `maxmemory-policy noeviction` on the Redis (CONFIG SET and in its config "
            "file or parameter group), then look for lost jobs",
            source="redis-exporter",
            conditions=(
                Condition(
                    REDIS_CONFIG, "value", "max", "==", 1, labels={"key": ("maxmemory-policy",), "value": ("!" + safe,)}
                ),
                Condition(REDIS_EVICTED, "increase", "sum", ">", 0, window_seconds=timing.oom_window_seconds),
            ),
            for_seconds=timing.confirm_seconds,
            match="any",
            expr=f"max({REDIS_CONFIG}{unsafe_policy}) == 1\n"
            f"or sum(increase({REDIS_EVICTED}{_sel(r)}[{duration(timing.oom_window_seconds)}])) > 0",
        ),
    ]


def _last(seconds: int) -> str:
    """`the last hour`, `the last 10 minutes`."""
    return "the last hour" if seconds == 3600 else f"the last {_human(seconds)}"


def _human(seconds: int) -> str:
    """`1 hour`, `5 minutes`, `90 seconds`, for alert texts."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
