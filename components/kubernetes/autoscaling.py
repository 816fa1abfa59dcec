"""Queue autoscaling on Kubernetes (`worker.autoscaling`): a KEDA ScaledObject and its
TriggerAuthentication, evaluating the signal of `killsafe.observability.autoscaling`.

Why KEDA's `redis` scaler and not its Prometheus trigger: the signal must exist when no worker runs
(the workers' /metrics vanish with them) and must not depend on the monitoring stack being up.
KEDA reads Redis directly, one trigger per key (the scaler checks each key's type: LLEN for lists,
ZCARD for sorted sets), and `advanced.scalingModifiers` combines them into one AverageValue metric.

Scale-in never loses a job: KEDA's HPA removes pods only after `scale_down_stabilization_seconds` of
low backlog, at most one pod (or 20 %) a minute, and active jobs count in the signal; a removed pod
gets SIGTERM and its full shutdown budget (terminationGracePeriodSeconds = max_job_seconds + drain
margin): it stops claiming, finishes its jobs, and hands back any left at its drain deadline. The
Deployment carries no `replicas` while the HPA owns the count, so a deploy never resets it.
Credentials: the TriggerAuthentication points KEDA at the existing Secret's keys, never inline.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.kubernetes.credentials import REDIS_DATABASE, redis_host, redis_secret_name
from killsafe.kubernetes.labels import object_meta, workload_labels
from killsafe.kubernetes.worker import worker_name
from killsafe.observability.autoscaling import backlog_keys, formula
from killsafe.spec import AutoscalingSpec, WorkloadSpec

KEDA_API = "keda.sh/v1alpha1"
POLLING_INTERVAL_SECONDS = 15
MIN_COOLDOWN_SECONDS = 300
SCALE_DOWN_PERCENT_PER_MINUTE = 20


def _autoscaling(spec: WorkloadSpec) -> AutoscalingSpec:
    if spec.worker.autoscaling is None:
        raise ValueError(f"workload {spec.name} has no worker.autoscaling; callers check it first")
    return spec.worker.autoscaling


def trigger_authentication_name(spec: WorkloadSpec) -> str:
    return f"{worker_name(spec)}-redis"


def trigger_authentication(spec: WorkloadSpec) -> dict[str, Any]:
    """KEDA reads the password (and, for external Redis, the address) from the existing Secret."""
    if spec.redis.mode == "in-cluster":
        refs = [{"parameter": "password", "name": redis_secret_name(spec), "key": contract.REDIS_PASSWORD_SECRET_KEY}]
    else:
        secret = spec.kubernetes.keda_redis_secret
        if secret is None:  # StackConfig refuses this; a component user gets the same message here
            raise ValueError("kubernetes.keda_redis_secret is required for worker.autoscaling with redis mode external")
        refs = [
            {"parameter": "address", "name": secret.name, "key": secret.address_key},
            {"parameter": "password", "name": secret.name, "key": secret.password_key},
        ]
    return {
        "apiVersion": KEDA_API,
        "kind": "TriggerAuthentication",
        "metadata": object_meta(
            trigger_authentication_name(spec), spec.kubernetes.namespace, workload_labels(spec, "worker", spec.image)
        ),
        "spec": {"secretTargetRef": refs},
    }


def _trigger_metadata(spec: WorkloadSpec, key: str, target: int) -> dict[str, str]:
    metadata = {"listName": key, "listLength": str(target), "databaseIndex": str(REDIS_DATABASE)}
    if spec.redis.mode == "in-cluster":
        metadata["address"] = f"{redis_host(spec)}:{contract.REDIS_PORT}"
    elif spec.kubernetes.keda_redis_secret is not None and spec.kubernetes.keda_redis_secret.tls:
        metadata["enableTLS"] = "true"
    return metadata


def scaled_object(spec: WorkloadSpec) -> dict[str, Any]:
    autoscaling = _autoscaling(spec)
    target = spec.worker.target_backlog_per_worker
    keys = backlog_keys(spec)
    kill_deadline = shutdown_budget(spec.worker).kill_deadline_seconds
    triggers = [
        {
            "type": "redis",
            "name": key.name,
            "metadata": _trigger_metadata(spec, key.key, target),
            "authenticationRef": {"name": trigger_authentication_name(spec)},
        }
        for key in keys
    ]
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": object_meta(
            worker_name(spec), spec.kubernetes.namespace, workload_labels(spec, "worker", spec.image)
        ),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker_name(spec)},
            "pollingInterval": POLLING_INTERVAL_SECONDS,
            # Only for the last worker (1 -> 0): at least one kill deadline after the backlog emptied.
            "cooldownPeriod": max(MIN_COOLDOWN_SECONDS, kill_deadline),
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Pods", "value": 1, "periodSeconds": 60},
                                {"type": "Percent", "value": SCALE_DOWN_PERCENT_PER_MINUTE, "periodSeconds": 60},
                            ],
                        },
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Pods", "value": 4, "periodSeconds": POLLING_INTERVAL_SECONDS},
                                {"type": "Percent", "value": 100, "periodSeconds": POLLING_INTERVAL_SECONDS},
                            ],
                        },
                    }
                },
                "scalingModifiers": {
                    "formula": formula(keys),
                    "target": str(target),
                    "activationTarget": "0",
                    "metricType": "AverageValue",
                },
            },
            "triggers": triggers,
        },
    }


def without_replicas(deployment: dict[str, Any]) -> dict[str, Any]:
    """The worker Deployment for an autoscaled workload: the HPA owns `spec.replicas`."""
    spec = {key: value for key, value in deployment["spec"].items() if key != "replicas"}
    return {**deployment, "spec": spec}


def autoscaling_manifests(spec: WorkloadSpec) -> list[dict[str, Any]]:
    if spec.worker.autoscaling is None:
        return []
    return [trigger_authentication(spec), scaled_object(spec)]
