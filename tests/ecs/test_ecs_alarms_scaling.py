"""Alarms, autoscaling, the dashboard service and the entrypoint mapping, on the built ECS requests.

botocore's model validates shapes (test_ecs_requests.py runs it over every request); here are the rules it
does not carry, from AWS's documentation (PutMetricAlarm: at most 10 metrics with metric math, ids
`^[a-z][a-zA-Z0-9_]*$`, exactly one query returning data, periods multiple of 60, evaluation range at most
one day below one-hour periods, TreatMissingData's four values), and that thresholds, windows and metric
names come from the shared alert definitions and the contract rather than being written again.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from killsafe import app_env, contract
from killsafe.ecs import build
from killsafe.observability.alerts import AlertTiming, Selectors, alerts
from killsafe.observability.autoscaling import backlog_keys
from killsafe.spec import WorkloadSpec
from tests.ecs.botocore_models import model_problems
from tests.ecs.harness import VARIANTS, ecs_spec

METRIC_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
TREAT_MISSING = {"breaching", "notBreaching", "ignore", "missing"}


def _of(spec: WorkloadSpec, operation: str) -> list[dict[str, Any]]:
    return [r.wire().params for r in build.build_requests(spec) if r.operation == operation]


def _alarms(spec: WorkloadSpec) -> dict[str, dict[str, Any]]:
    return {a["AlarmName"]: a for a in _of(spec, "PutMetricAlarm")}


def _expression(alarm: dict[str, Any]) -> str:
    (returned,) = [m for m in alarm["Metrics"] if m["ReturnData"]]
    return str(returned["Expression"])


def _stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_alarm_keeps_the_limits_botocore_does_not_check(variant: str) -> None:
    spec = VARIANTS[variant]()
    found = _of(spec, "PutMetricAlarm")
    assert found
    for alarm in found:
        assert model_problems("cloudwatch", "PutMetricAlarm", alarm) == []
        assert len(alarm["Metrics"]) <= 10, alarm["AlarmName"]
        assert all(METRIC_ID.match(m["Id"]) for m in alarm["Metrics"])
        assert sum(1 for m in alarm["Metrics"] if m["ReturnData"]) == 1
        for stat in _stats(alarm):
            assert stat["Period"] % 60 == 0
            span = stat["Period"] * alarm["EvaluationPeriods"]
            assert span <= (86_400 if stat["Period"] < 3600 else 7 * 86_400), alarm["AlarmName"]
        assert alarm["TreatMissingData"] in TREAT_MISSING
        assert alarm["AlarmActions"] == alarm["OKActions"] == ["${alarm-topic.arn}"]
        assert len(alarm["AlarmDescription"]) <= 1024 and "{queue}" not in alarm["AlarmDescription"]


def test_the_alarms_are_the_shared_definitions_that_apply_on_ecs() -> None:
    spec = ecs_spec()
    defined = {a.name for a in alerts(spec, AlertTiming.for_spec(spec.alerts), Selectors(worker="", redis="x"))}
    emitted = {next(t["Value"] for t in a["Tags"] if t["Key"] == "alertname") for a in _of(spec, "PutMetricAlarm")}
    assert emitted == defined, "every worker and Redis alert; WorkerRestarting/WorkerOOMKilled need kube-state-metrics"
    assert {
        "FailedJobsHigh",
        "QueueStalled",
        "WorkerDown",
        "DeadLetterGrowing",
        "JobsInterrupted",
        "RedisMemoryHigh",
    } <= emitted
    external = VARIANTS["worker only, existing cluster, external redis"]()
    names = {next(t["Value"] for t in a["Tags"] if t["Key"] == "alertname") for a in _of(external, "PutMetricAlarm")}
    assert names == defined - {"RedisMemoryHigh", "RedisEvictionPolicyUnsafe"}, "an external Redis has no metrics here"
    quiet = ecs_spec(alerts={"enabled": False})
    assert not _of(quiet, "PutMetricAlarm") and not _of(quiet, "CreateTopic") and not _of(quiet, "CreateKey")


def test_thresholds_and_windows_come_from_the_spec() -> None:
    spec = ecs_spec(alerts={"failed_jobs_per_hour": 7, "stalled_minutes": 9, "worker_down_minutes": 4})
    alarms = _alarms(spec)
    failed = alarms["emails-FailedJobsHigh-emails-bulk"]
    assert _expression(failed) == "IF((FILL(m0, 0) > 7), 1, 0)"
    (stat,) = _stats(failed)
    assert stat["Period"] == 3600 and stat["Stat"] == "Sum"
    assert stat["Metric"] == {
        "Namespace": "killsafe/emails",
        "MetricName": contract.METRIC_JOBS_FAILED,
        "Dimensions": [{"Name": "Queue", "Value": "emails-bulk"}],
    }
    stalled = alarms["emails-QueueStalled-emails"]
    assert {s["Period"] for s in _stats(stalled)} == {9 * 60}
    assert {(s["Metric"]["MetricName"], s["Stat"]) for s in _stats(stalled)} == {
        (contract.METRIC_QUEUE_JOBS, "Minimum"),
        (contract.METRIC_JOBS_COMPLETED, "Sum"),
        (contract.METRIC_JOBS_COMPLETED, "SampleCount"),
    }
    waiting = {d["Value"] for s in _stats(stalled) for d in s["Metric"]["Dimensions"] if d["Name"] == "State"}
    assert waiting == {"waiting", "prioritized"}
    down = alarms["emails-WorkerDown"]
    assert down["EvaluationPeriods"] == down["DatapointsToAlarm"] == 4


def test_worker_down_compares_ready_workers_with_the_desired_count() -> None:
    down = _alarms(ecs_spec())["emails-WorkerDown"]
    stats = {s["Metric"]["MetricName"]: s for s in _stats(down)}
    assert stats[contract.METRIC_WORKER_READY]["Stat"] == "Sum"
    assert stats[contract.METRIC_WORKER_READY]["Metric"]["Dimensions"] == [{"Name": "Tier", "Value": "worker"}]
    assert stats["DesiredTaskCount"]["Metric"] == {
        "Namespace": "ECS/ContainerInsights",
        "MetricName": "DesiredTaskCount",
        "Dimensions": [{"Name": "ClusterName", "Value": "emails"}, {"Name": "ServiceName", "Value": "emails-worker"}],
    }
    assert _expression(down) == "IF((FILL(m0, 0) < IF(FILL(m1, 0) > 2, FILL(m1, 0), 2)), 1, 0)"
    fixed = _alarms(ecs_spec(worker__autoscaling=None, worker__replicas=3))["emails-WorkerDown"]
    assert _expression(fixed) == "IF((FILL(m0, 0) < 3), 1, 0)" and len(fixed["Metrics"]) == 2


def test_redis_alarms_read_every_elasticache_node() -> None:
    alarms = _alarms(ecs_spec())
    memory = alarms["emails-RedisMemoryHigh"]
    nodes = [d["Value"] for s in _stats(memory) for d in s["Metric"]["Dimensions"]]
    assert nodes == ["emails-redis-001", "emails-redis-002"]
    assert _expression(memory) == "IF((MAX([FILL(m0, 0), FILL(m1, 0)]) / 100 > 0.8), 1, 0)"
    evictions = alarms["emails-RedisEvictionPolicyUnsafe"]
    assert {s["Metric"]["MetricName"] for s in _stats(evictions)} == {"Evictions"}


def test_interrupted_jobs_alarm_per_queue_and_reason() -> None:
    alarms = _alarms(ecs_spec())
    for queue in ("emails", "emails-bulk"):
        for reason in contract.INTERRUPT_REASONS:
            alarm = alarms[f"emails-JobsInterrupted-{queue}-{reason}"]
            (stat,) = _stats(alarm)
            assert stat["Metric"]["Dimensions"] == [
                {"Name": "Queue", "Value": queue},
                {"Name": "Reason", "Value": reason},
            ]
            assert reason in alarm["AlarmDescription"]


def test_scaling_tracks_backlog_per_task_from_the_shared_signal() -> None:
    spec = ecs_spec()
    (target,) = _of(spec, "RegisterScalableTarget")
    assert model_problems("application-autoscaling", "RegisterScalableTarget", target) == []
    assert target["ResourceId"] == "service/emails/emails-worker"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 12)
    (policy,) = _of(spec, "PutScalingPolicy")
    assert model_problems("application-autoscaling", "PutScalingPolicy", policy) == []
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == spec.worker.target_backlog_per_worker == 20
    assert (config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (300, 60)
    metrics = config["CustomizedMetricSpecification"]["Metrics"]
    gauges = {
        (m["MetricStat"]["Metric"]["Dimensions"][0]["Value"], m["MetricStat"]["Metric"]["Dimensions"][1]["Value"])
        for m in metrics
        if m["Id"] != "tasks" and "MetricStat" in m
    }
    assert gauges == {(k.queue, k.state) for k in backlog_keys(spec)}
    (expression,) = [m["Expression"] for m in metrics if m["ReturnData"]]
    assert "IF(FILL(q0_delayed, 0) > 0, 1, 0)" in expression and "FILL(q1_active, 0)" in expression
    assert expression.startswith("IF(FILL(tasks, 0) > 0, (")
    (tasks,) = [m for m in metrics if m["Id"] == "tasks"]
    assert tasks["MetricStat"]["Stat"] == "SampleCount"
    assert len(json.dumps(policy)) < 50_000, "PutScalingPolicy's documented request size limit"
    (worker,) = [s for s in _of(spec, "CreateService") if s["serviceName"] == "emails-worker"]
    assert worker["desiredCount"] == 2, "starts at min_replicas"
    assert not _of(ecs_spec(worker__autoscaling=None, worker__replicas=3), "PutScalingPolicy")


def test_an_existing_cluster_scales_by_its_own_name() -> None:
    spec = VARIANTS["worker only, existing cluster, external redis"]()
    assert spec.worker.autoscaling is not None
    (target,) = _of(spec, "RegisterScalableTarget")
    assert target["ResourceId"] == "service/platform/emails-worker"
    down = _alarms(spec)["emails-WorkerDown"]
    assert "DesiredTaskCount" not in json.dumps(down), "Container Insights is not known to be on there"


def _container(spec: WorkloadSpec, family: str) -> dict[str, Any]:
    (task,) = [t for t in _of(spec, "RegisterTaskDefinition") if t["family"] == family]
    (container,) = task["containerDefinitions"]
    return dict(container)


def test_entrypoint_and_command_keep_docker_semantics() -> None:
    """Issue 7's `entrypoint` is the image ENTRYPOINT override, `command` its CMD: ECS entryPoint / command."""
    spec = ecs_spec(
        worker__entrypoint=["/usr/bin/tini", "--"],
        worker__command=["python", "-m", "app.worker"],
        web__entrypoint=["/usr/local/bin/run"],
    )
    worker = _container(spec, "emails-worker")
    assert worker["entryPoint"] == ["/usr/bin/tini", "--"]
    assert worker["command"] == ["python", "-m", "app.worker"]
    assert _container(spec, "emails-web")["entryPoint"] == ["/usr/local/bin/run"]
    plain = ecs_spec()
    assert "entryPoint" not in _container(plain, "emails-worker"), "the image's ENTRYPOINT (dumb-init) stays PID 1"
    assert _container(plain, "emails-worker")["command"] == ["killsafe-worker"]


def test_the_dashboard_runs_alone_off_the_load_balancer() -> None:
    spec = ecs_spec()
    container = _container(spec, "emails-dashboard")
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env == {**app_env.dashboard_env(spec, None, None), contract.ENV_HEALTH_PORT: "8090"}
    assert contract.ENV_DASHBOARD_BIND not in env and contract.ENV_DASHBOARD_CREDENTIALS not in env
    assert container["portMappings"] == [
        {"name": "dashboard", "containerPort": 8090, "protocol": "tcp", "appProtocol": "http"}
    ]
    assert container["command"] == ["killsafe-dashboard"]
    assert container["healthCheck"]["command"][:3] == ["CMD", "killsafe-worker", "healthcheck"]
    (service,) = [s for s in _of(spec, "CreateService") if s["serviceName"] == "emails-dashboard"]
    assert service["desiredCount"] == 1
    assert "loadBalancers" not in service
    assert service["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] == ["${dashboard-sg.id}"]
    (group,) = _of(spec, "CreateTargetGroup")
    assert group["Port"] == 8000, "the ALB target group is the web tier's alone"
    off = ecs_spec(dashboard=None)
    assert not [t for t in _of(off, "RegisterTaskDefinition") if t["family"] == "emails-dashboard"]
