"""Application Auto Scaling for `worker.autoscaling`: target tracking on backlog per worker task.

The signal is the one defined in `killsafe.observability.autoscaling` (waiting + prioritized + active,
delayed counting as one while any exist, summed over the queues), computed here with CloudWatch metric
math over the gauges the workers publish as EMF (`killsafe_queue_jobs`, Maximum: every worker reports the
same value), divided by the workers publishing (SampleCount of `killsafe_worker_ready` in the minute:
one sample per task). Target tracking then keeps backlog per task at `target_backlog_per_worker`:
desired = ceil(tasks x backlog per task / target), within min/max.

- Scale from zero is refused on ECS (the spec says why): with no task running nothing publishes the
  depth, so a job enqueued then would never start a worker. min_replicas is at least 1.
- Scale-in: active jobs are part of the signal, so work in progress keeps its workers; ScaleInCooldown
  is `scale_down_stabilization_seconds`; ECS stops only unprotected tasks (a worker protects its task
  while it holds jobs, see the worker's task_protection.py), and a stopped one still drains within its
  shutdown budget (stopTimeout).
- Scale-out: ScaleOutCooldown 60 s (one EMF period) so a burst is answered in about a minute.

The service's desiredCount belongs to Application Auto Scaling after creation: the component ignores
changes to it, so a `pulumi up` never resets what the autoscaler chose.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.ecs import names
from killsafe.ecs.alarms import metrics_namespace
from killsafe.ecs.iam import cluster_name
from killsafe.ecs.requests import AwsRequest
from killsafe.observability.autoscaling import backlog_keys
from killsafe.spec import AutoscalingSpec, WorkloadSpec

SCALABLE_TARGET = "worker-scalable-target"
SCALING_POLICY = "worker-scaling-policy"
DIMENSION = "ecs:service:DesiredCount"
SCALE_OUT_COOLDOWN_SECONDS = contract.EMF_INTERVAL_SECONDS
TASKS_ID = "tasks"


def resource_id(spec: WorkloadSpec) -> str:
    return f"service/{cluster_name(spec)}/{names.service_name(spec, 'worker')}"


def autoscaling_of(spec: WorkloadSpec) -> AutoscalingSpec:
    if spec.worker.autoscaling is None:
        raise ValueError("callers check spec.worker.autoscaling first")
    return spec.worker.autoscaling


def backlog_per_task_metrics(spec: WorkloadSpec) -> list[dict[str, Any]]:
    """The CustomizedMetricSpecification `Metrics`: one gauge per backlog key, the task count, the math."""
    namespace = metrics_namespace(spec)
    queue, state = contract.EMF_DIMENSIONS["queue"], contract.EMF_DIMENSIONS["state"]
    metrics: list[dict[str, Any]] = []
    terms: list[str] = []
    for key in backlog_keys(spec):
        metrics.append(
            {
                "Id": key.name,
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": contract.METRIC_QUEUE_JOBS,
                        "Dimensions": [{"Name": queue, "Value": key.queue}, {"Name": state, "Value": key.state}],
                    },
                    "Stat": "Maximum",
                },
                "ReturnData": False,
            }
        )
        filled = f"FILL({key.name}, 0)"
        terms.append(f"IF({filled} > 0, 1, 0)" if key.presence_only else filled)
    metrics.append(
        {
            "Id": TASKS_ID,
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": contract.METRIC_WORKER_READY,
                    "Dimensions": [{"Name": contract.EMF_TIER_DIMENSION, "Value": contract.EMF_WORKER_TIER}],
                },
                "Stat": "SampleCount",
            },
            "ReturnData": False,
        }
    )
    backlog = " + ".join(terms)
    tasks = f"FILL({TASKS_ID}, 0)"
    metrics.append(
        {
            "Id": "backlog_per_task",
            "Expression": f"IF({tasks} > 0, ({backlog}) / {tasks}, {backlog})",
            "Label": "jobs waiting, prioritized or active (delayed: 1) per worker task",
            "ReturnData": True,
        }
    )
    return metrics


def scaling_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    autoscaling = autoscaling_of(spec)
    target = {"ServiceNamespace": "ecs", "ResourceId": resource_id(spec), "ScalableDimension": DIMENSION}
    return [
        AwsRequest(
            SCALABLE_TARGET,
            "application-autoscaling",
            "RegisterScalableTarget",
            {
                **target,
                "MinCapacity": autoscaling.min_replicas,
                "MaxCapacity": autoscaling.max_replicas,
                "Tags": names.tags(spec, "worker"),
            },
        ),
        AwsRequest(
            SCALING_POLICY,
            "application-autoscaling",
            "PutScalingPolicy",
            {
                "PolicyName": f"{spec.name}-worker-backlog",
                **target,
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": float(spec.worker.target_backlog_per_worker),
                    "CustomizedMetricSpecification": {"Metrics": backlog_per_task_metrics(spec)},
                    "ScaleOutCooldown": SCALE_OUT_COOLDOWN_SECONDS,
                    "ScaleInCooldown": autoscaling.scale_down_stabilization_seconds,
                    "DisableScaleIn": False,
                },
            },
        ),
    ]
