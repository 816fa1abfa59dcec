"""The worker's CloudWatch Embedded Metric Format output, from a real worker on a real redis-server.

Each line is parsed back and checked against the EMF specification's document structure (written here
from AWS's specification, not from the library that writes it): a root `_aws` member with an integer
`Timestamp` (ms) and `CloudWatchMetrics` directives, each with a `Namespace`, `Dimensions` (arrays of at
most 30 keys, each key a top-level string member) and `Metrics` (at most 100, each `Name` a top-level
number or array of at most 100 numbers, `Unit` from CloudWatch's list). Then the values: the counts
of what the worker did, in the metric names the alarms and the autoscaler read.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from killsafe import contract as builder_contract
from killsafe.ecs.alarms import metrics_namespace
from killsafe.ecs.tasks import worker_environment
from killsafe_worker import contract
from killsafe_worker.emf import EmfPublisher, seconds_until_next_flush
from killsafe_worker.metrics import WorkerMetrics
from tests.conftest import RedisServer
from tests.ecs.harness import ecs_spec
from tests.worker.conftest import WorkerFactory, client, enqueue, job_state, wait_for

NAMESPACE = "killsafe/emf-test"
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def spec_problems(document: Any, now_ms: int) -> list[str]:
    """What the EMF specification forbids in one log event (empty: a valid EMF document)."""
    problems: list[str] = []
    if not isinstance(document, dict) or not isinstance(document.get("_aws"), dict):
        return ["the root is not an object with an _aws object"]
    meta = document["_aws"]
    stamp = meta.get("Timestamp")
    if not isinstance(stamp, int) or isinstance(stamp, bool) or abs(stamp - now_ms) > 3_600_000:
        problems.append(f"_aws.Timestamp {stamp!r} is not a recent epoch time in ms")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*problems, "_aws.CloudWatchMetrics is not a non-empty array"]
    for directive in directives:
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str) or not 1 <= len(namespace) <= 255:
            problems.append(f"Namespace {namespace!r}")
        dimensions = directive.get("Dimensions")
        if not isinstance(dimensions, list):
            problems.append("Dimensions is not an array")
            dimensions = []
        for dimension_set in dimensions:
            if not isinstance(dimension_set, list) or len(dimension_set) > 30:
                problems.append(f"dimension set {dimension_set!r} is not an array of at most 30 keys")
                continue
            for key in dimension_set:
                if not isinstance(document.get(key), str):
                    problems.append(f"dimension {key!r} is not a top-level string member")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or len(metrics) > 100:
            problems.append("Metrics is not an array of at most 100 definitions")
            continue
        for metric in metrics:
            name = metric.get("Name")
            value = document.get(name)
            values = value if isinstance(value, list) else [value]
            if len(values) > 100 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                problems.append(f"metric {name!r} has no numeric top-level member (got {value!r})")
            if "Unit" in metric and metric["Unit"] not in UNITS:
                problems.append(f"metric {name!r} has unit {metric['Unit']!r}")
    return problems


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def value(lines: list[dict[str, Any]], metric: str, **dimensions: str) -> float:
    """Sum of `metric` over the lines whose dimensions are exactly `dimensions`."""
    total = 0.0
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        (keys,) = directive["Dimensions"]
        if metric in line and {k: line[k] for k in keys} == dimensions:
            total += line[metric]
    return total


def test_the_ecs_builder_switches_emf_on_for_the_worker_only() -> None:
    spec = ecs_spec()
    assert worker_environment(spec)[builder_contract.ENV_EMF_NAMESPACE] == metrics_namespace(spec) == "killsafe/emails"


def test_a_real_worker_publishes_valid_emf_with_the_contract_metrics(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    r = client(redis_server.url)
    worker = workers.start(
        queues="jobs,other",
        concurrency=2,
        env={
            contract.ENV_EMF_NAMESPACE: NAMESPACE,
            contract.ENV_MAX_JOB_SECONDS: "60",
            contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "1",
        },
    )
    done = [enqueue(redis_server.url, "echo", {"n": i}) for i in range(3)]
    failed = [enqueue(redis_server.url, "fail", {"message": "boom"}, attempts=1) for _ in range(2)]
    enqueue(redis_server.url, "echo", {"n": 9}, queue="other")
    wait_for(lambda: all(job_state(r, j) == "completed" for j in done), 30, "the echo jobs")
    wait_for(lambda: all(job_state(r, j) == "failed" for j in failed), 30, "the failing jobs")
    slow = enqueue(redis_server.url, "sleep", {"seconds": 30, "idempotency_key": "emf-slow"})
    wait_for(lambda: job_state(r, slow) == "active", 30, "the slow job to start")
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(30) == contract.EXIT_DRAIN_DEADLINE

    lines = emf_lines(worker.log_text())
    assert lines, "the worker wrote no EMF line"
    now_ms = int(time.time() * 1000)
    for line in lines:
        assert spec_problems(line, now_ms) == [], line
        assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    completed = contract.METRIC_JOBS_COMPLETED
    assert value(lines, completed, Queue="jobs") == 3
    assert value(lines, completed, Queue="other") == 1
    assert value(lines, contract.METRIC_JOBS_FAILED, Queue="jobs") == 2
    assert value(lines, contract.METRIC_JOBS_INTERRUPTED, Queue="jobs", Reason="shutdown_deadline") == 1, (
        "the jobs handed back at the drain deadline reach CloudWatch in the exit line"
    )
    assert value(lines, contract.METRIC_JOBS_INTERRUPTED, Queue="jobs", Reason="lock_lost") == 0
    depths = {
        (line["Queue"], line["State"]) for line in lines if contract.METRIC_QUEUE_JOBS in line and "State" in line
    }
    assert depths == {(q, s) for q in ("jobs", "other") for s in contract.QUEUE_STATES}
    durations = [line[contract.METRIC_JOB_DURATION] for line in lines if contract.METRIC_JOB_DURATION in line]
    assert durations and all(d >= 0 for d in durations)
    dimension_sets = {tuple(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) for line in lines}
    assert dimension_sets <= {("Queue",), ("Queue", "State"), ("Queue", "Reason"), ("Tier",)}


def test_off_ecs_the_worker_writes_no_emf(redis_server: RedisServer, workers: WorkerFactory) -> None:
    r = client(redis_server.url)
    worker = workers.start()
    job = enqueue(redis_server.url, "echo", {"n": 1})
    wait_for(lambda: job_state(r, job) == "completed", 30, "the job")
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(30) == contract.EXIT_OK
    assert emf_lines(worker.log_text()) == []


def test_counters_are_increases_between_flushes_and_ready_is_one_sample_a_minute() -> None:
    metrics = WorkerMetrics(["q"])
    flushes: list[list[str]] = [[], []]
    now = float(int(time.time()))
    sink: list[str] = flushes[0]
    publisher = EmfPublisher(metrics, NAMESPACE, write=lambda text: sink.append(text), clock=lambda: now)  # noqa: PLW0108 (sink is rebound)
    metrics.queues["q"].job_completed(0.5)
    metrics.queues["q"].job_completed(1.5)
    metrics.worker_ready.set(1)
    publisher.flush()
    sink = flushes[1]
    metrics.queues["q"].job_completed(1.0)
    publisher.flush(final=True)
    head, tail = ([json.loads(line) for line in flush] for flush in flushes)
    assert head and tail, "both flushes wrote lines"
    assert value(head, contract.METRIC_JOBS_COMPLETED, Queue="q") == 2
    assert value(tail, contract.METRIC_JOBS_COMPLETED, Queue="q") == 1, "an increase, not the running total"
    assert value(head, contract.METRIC_JOB_DURATION, Queue="q") == pytest.approx(1.0)
    assert value(head, contract.METRIC_WORKER_READY, Tier="worker") == 1
    assert value(tail, contract.METRIC_WORKER_READY, Tier="worker") == 0, "the exit line carries no ready sample"
    assert all(line["_aws"]["Timestamp"] == int(now) * 1000 for line in head + tail)


def test_an_unwritable_stdout_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: str) -> None:
        raise BrokenPipeError("stdout closed")

    publisher = EmfPublisher(WorkerMetrics(["q"]), NAMESPACE, write=broken)
    for _ in range(3):
        publisher.flush()
    assert [r.getMessage() for r in caplog.records].count(
        "EMF metrics could not be written; retrying every minute"
    ) == 1


@pytest.mark.parametrize(
    ("now", "wait"), [(0.0, 30.0), (29.0, 1.0), (30.0, 60.0), (30.5, 59.5), (59.0, 31.0), (1_699_999_995.25, 14.75)]
)
def test_flushes_land_in_the_middle_of_each_minute(now: float, wait: float) -> None:
    assert seconds_until_next_flush(now) == pytest.approx(wait)
