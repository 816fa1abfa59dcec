"""The CloudWatch emitter: alert definitions -> PutMetricAlarm inputs (one metric-math alarm each).

It reads each alert's emitter-neutral `Condition`s (never the PromQL) and the thresholds, windows and
`for` durations in them, and says where each metric lives in CloudWatch through `Sources` (a target's
business: on ECS the workers' EMF namespace, Container Insights and ElastiCache). Nothing here retypes a
metric name or a threshold.

How a condition becomes metric math, evaluated over one period P per alarm (the alert's longest window,
60 s when it has none), with the sliding evaluation window CloudWatch uses by default:

    transform  combine   CloudWatch                                   so that
    value      max       Minimum (for >), Maximum (for <) over P      the condition held for all of P
    value      count     Sum of per-worker 0/1 samples over P=60 s    workers publish once a minute
    value      ratio     the source's own percentage / 100            (ElastiCache memory use)
    increase   sum       Sum over P of the per-flush increases        a counter's increase over P
    growth     max       DIFF of the per-period Maximum               the gauge grew since P ago
    present    max       SampleCount over P > 0                       the series was watched all of P

A label filter (`state` in waiting, prioritized) sums one metric per value; `group_by` labels become one
alarm per value combination (queues from the spec, reasons and states from the contract). The conditions
join with AND (`match: all`) or OR (`any`) inside `IF(..., 1, 0)`; the alarm fires when that is 1 for
ceil(for / P) periods in a row. Missing data counts as 0 (FILL), so "no completion" and "no worker
left" are data, and an alert whose series are all gone resolves as its PromQL twin does.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from killsafe import contract
from killsafe.observability.alerts import Alert, AlertTiming, Condition, Selectors, alerts
from killsafe.spec import WorkloadSpec

MINUTE = 60
MAX_METRICS_PER_ALARM = 10
"""PutMetricAlarm's documented limit on `Metrics` entries (botocore's model does not carry it)."""
TREAT_MISSING_DATA = ("breaching", "notBreaching", "ignore", "missing")
GROUP_VALUES_FROM_CONTRACT: dict[str, tuple[str, ...]] = {
    "reason": contract.INTERRUPT_REASONS,
    "state": contract.QUEUE_STATES,
}


@dataclass(frozen=True)
class CloudWatchMetric:
    """One metric as CloudWatch knows it. `label_dimensions` maps alert labels (queue) to dimension names."""

    namespace: str
    name: str
    dimensions: Mapping[str, str] = field(default_factory=dict)
    label_dimensions: Mapping[str, str] = field(default_factory=dict)
    percent: bool = False
    """A percentage (0-100) standing in for a ratio condition (0-1)."""


@dataclass(frozen=True)
class Sources:
    """Where a target's series are in CloudWatch.

    `worker_namespace`: the contract metrics (EMF), dimensions per contract.EMF_DIMENSIONS.
    `desired_workers`: the platform's desired worker count (for `compare_to="desired_workers"`), if any.
    `external`: metrics the worker does not publish (a Redis exporter's), each mapped to the CloudWatch
    metrics standing in for it, one per node (combined with MAX), or to None: not applicable on this
    target (the value in `not_applicable` says why, for the docs and the render plan).
    """

    worker_namespace: str
    desired_workers: CloudWatchMetric | None = None
    external: Mapping[str, tuple[CloudWatchMetric, ...] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    alert: str
    why: str


def cloudwatch_alarms(
    spec: WorkloadSpec,
    sources: Sources,
    actions: Sequence[Any],
    *,
    redis: bool,
    timing: AlertTiming | None = None,
) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """PutMetricAlarm inputs for every applicable alert (and what was skipped, with the reason).

    `actions` go to AlarmActions and OKActions (an SNS topic ARN, or a ref to one); `redis`: whether the
    target has Redis metrics at all (the Redis alerts are emitted only then).
    """
    timing = timing or AlertTiming.for_spec(spec.alerts, scrape_interval_seconds=MINUTE)
    # The PromQL these selectors would build is never read here; they only say which sources exist.
    selectors = Selectors(
        worker="",
        expected_workers="cloudwatch" if sources.desired_workers is not None else None,
        redis="cloudwatch" if redis else None,
    )
    made: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    for alert in alerts(spec, timing, selectors):
        usable = [c for c in alert.conditions if _applicable(c, sources)]
        if not usable or (alert.match == "all" and len(usable) < len(alert.conditions)):
            skipped.append(Skipped(alert.name, _why_not(alert, sources)))
            continue
        for group in _groups(spec, usable):
            made.append(_alarm(spec, alert, conditions=usable, group=group, sources=sources, actions=actions))
    return made, skipped


def _applicable(condition: Condition, sources: Sources) -> bool:
    if condition.metric.startswith("killsafe_"):
        return not any(value.startswith("!") for values in condition.labels.values() for value in values)
    return sources.external.get(condition.metric) is not None


def _why_not(alert: Alert, sources: Sources) -> str:
    missing = [c.metric for c in alert.conditions if not _applicable(c, sources)]
    return f"no CloudWatch counterpart for {', '.join(sorted(set(missing)))}"


def _groups(spec: WorkloadSpec, conditions: Sequence[Condition]) -> list[dict[str, str]]:
    labels: list[str] = []
    for condition in conditions:
        labels += [label for label in condition.group_by if label not in labels]
    values = [spec.worker.queues if label == "queue" else GROUP_VALUES_FROM_CONTRACT[label] for label in labels]
    return [dict(zip(labels, combo, strict=True)) for combo in itertools.product(*values)]


def alarm_period(alert: Alert, conditions: Sequence[Condition]) -> int:
    windows = [c.window_seconds for c in conditions if c.window_seconds]
    period = max(windows, default=MINUTE)
    return max(MINUTE, math.ceil(period / MINUTE) * MINUTE)


def alarm_name(spec: WorkloadSpec, alert: Alert, group: Mapping[str, str]) -> str:
    return "-".join([spec.name, alert.name, *group.values()])


class _Queries:
    """The alarm's MetricDataQuery list: one MetricStat per distinct (metric, statistic)."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.entries: list[dict[str, Any]] = []
        self._ids: dict[tuple[Any, ...], str] = {}

    def stat(self, metric: CloudWatchMetric, dimensions: Mapping[str, str], statistic: str) -> str:
        key = (metric.namespace, metric.name, tuple(sorted(dimensions.items())), statistic)
        if key not in self._ids:
            self._ids[key] = f"m{len(self._ids)}"
            self.entries.append(
                {
                    "Id": self._ids[key],
                    "MetricStat": {
                        "Metric": {
                            "Namespace": metric.namespace,
                            "MetricName": metric.name,
                            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                        },
                        "Period": self.period,
                        "Stat": statistic,
                    },
                    "ReturnData": False,
                }
            )
        return self._ids[key]


def _worker_metric(sources: Sources, condition: Condition) -> CloudWatchMetric:
    fixed = (
        {}
        if condition.metric != contract.METRIC_WORKER_READY
        else {contract.EMF_TIER_DIMENSION: contract.EMF_WORKER_TIER}
    )
    return CloudWatchMetric(sources.worker_namespace, condition.metric, fixed, contract.EMF_DIMENSIONS)


def _statistic(condition: Condition) -> str:
    if condition.transform == "present":
        return "SampleCount"
    if condition.transform == "growth":
        return "Maximum"
    if condition.transform == "increase" or condition.combine in ("sum", "count"):
        return "Sum"
    return "Minimum" if condition.comparison == ">" else "Maximum"


def _series(condition: Condition, group: Mapping[str, str], sources: Sources, queries: _Queries) -> str:
    """A metric-math expression for the condition's left-hand side, missing data as 0."""
    statistic = _statistic(condition)
    if condition.metric.startswith("killsafe_"):
        metric = _worker_metric(sources, condition)
        base = {
            **metric.dimensions,
            **{metric.label_dimensions[k]: v for k, v in group.items() if k in condition.group_by},
        }
        label_sets = [
            [(metric.label_dimensions[label], value) for value in values] for label, values in condition.labels.items()
        ]
        terms = [
            f"FILL({queries.stat(metric, {**base, **dict(extra)}, statistic)}, 0)"
            for extra in itertools.product(*label_sets)
        ]
        series = terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"
    else:
        nodes = sources.external[condition.metric] or ()
        ids = [f"FILL({queries.stat(node, node.dimensions, statistic)}, 0)" for node in nodes]
        series = ids[0] if len(ids) == 1 else f"MAX([{', '.join(ids)}])"
        if nodes and nodes[0].percent:
            series = f"{series} / 100"
    if condition.transform == "growth":
        series = f"DIFF({series})"
    if condition.transform == "present":
        series = f"IF({series} > 0, 1, 0)"
    return series


def _clause(condition: Condition, group: Mapping[str, str], sources: Sources, queries: _Queries) -> str:
    left = _series(condition, group, sources, queries)
    threshold = _number(condition.threshold)
    if condition.compare_to == "desired_workers" and sources.desired_workers is not None:
        desired = sources.desired_workers
        d = f"FILL({queries.stat(desired, desired.dimensions, 'Average')}, 0)"
        threshold = f"IF({d} > {threshold}, {d}, {threshold})"
    return f"{left} {condition.comparison} {threshold}"


def _alarm(
    spec: WorkloadSpec,
    alert: Alert,
    *,
    conditions: Sequence[Condition],
    group: Mapping[str, str],
    sources: Sources,
    actions: Sequence[Any],
) -> dict[str, Any]:
    period = alarm_period(alert, conditions)
    queries = _Queries(period)
    joiner = " AND " if alert.match == "all" else " OR "
    clauses = [_clause(c, group, sources, queries) for c in conditions]
    expression = f"IF({joiner.join(f'({c})' for c in clauses)}, 1, 0)"
    periods = max(1, math.ceil(alert.for_seconds / period))
    metrics = [
        *queries.entries,
        {"Id": "firing", "Expression": expression, "Label": alert.name, "ReturnData": True},
    ]
    return {
        "AlarmName": alarm_name(spec, alert, group),
        "AlarmDescription": description(spec, alert, group),
        "ActionsEnabled": True,
        "AlarmActions": list(actions),
        "OKActions": list(actions),
        "Metrics": metrics,
        "EvaluationPeriods": periods,
        "DatapointsToAlarm": periods,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
        "Tags": [{"Key": k, "Value": v} for k, v in {**alert.labels, "alertname": alert.name, **group}.items()],
    }


_PLACEHOLDER = re.compile(r"\{(queue|reason|pod|value)\}")
DESCRIPTION_MAX = 1024


def description(spec: WorkloadSpec, alert: Alert, group: Mapping[str, str]) -> str:
    """Summary, what it means, the first thing to do, the runbook: placeholders filled per alarm."""

    def fill(match: re.Match[str]) -> str:
        return group.get(match.group(1), "?" if match.group(1) != "value" else "the value")

    text = f"{alert.summary}. {alert.description} First: {alert.first_action}. Runbook: "
    runbook = (spec.alerts.runbook_base_url or "killsafe components/observability/runbooks/") + alert.runbook
    text = _PLACEHOLDER.sub(fill, text) + runbook
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def metric_ids(alarm: Mapping[str, Any]) -> Iterator[str]:
    """Every query id of an alarm (tests check CloudWatch's id rules on them)."""
    for entry in alarm.get("Metrics") or []:
        yield str(entry["Id"])
