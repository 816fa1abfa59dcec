"""The worker Deployment: queue consumers whose every deadline comes from the shutdown budget."""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.kubernetes import pods
from killsafe.kubernetes.app_env import REDIS_URL_FILE_NAME, shared_env, with_user_env
from killsafe.kubernetes.credentials import redis_secret_name, redis_url_secret_key
from killsafe.kubernetes.labels import object_meta, selector_labels, workload_labels
from killsafe.spec import WorkloadSpec

HEALTH_PORT_NAME = "health"


def worker_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-worker"


def worker_env(spec: WorkloadSpec) -> dict[str, str]:
    """The budget the worker enforces on itself; it must agree with the pod's grace period."""
    worker = spec.worker
    budget = shutdown_budget(worker)
    own = {
        **shared_env(spec),
        contract.ENV_CONCURRENCY: str(worker.concurrency),
        contract.ENV_HEALTH_PORT: str(worker.health_port),
        contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(budget.drain_deadline_seconds),
        contract.ENV_LOCK_DURATION_MS: str(budget.lock_duration_ms),
        contract.ENV_STALLED_INTERVAL_MS: str(budget.stalled_interval_ms),
        contract.ENV_LIVENESS_STALL_SECONDS: str(budget.liveness_stall_seconds),
    }
    return with_user_env(spec, own)


def worker_deployment(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    """terminationGracePeriodSeconds is the kill deadline; the worker drains until the (shorter)
    drain deadline and hands unfinished jobs back before the platform's SIGKILL."""
    worker = spec.worker
    budget = shutdown_budget(worker)
    selector = selector_labels(spec, "worker")
    labels = workload_labels(spec, "worker", spec.image)
    container = {
        "name": "worker",
        "image": spec.image,
        "imagePullPolicy": pods.image_pull_policy(spec.image),
        "command": list(worker.command),
        "env": pods.env_list(worker_env(spec)),
        "ports": [{"name": HEALTH_PORT_NAME, "containerPort": worker.health_port, "protocol": "TCP"}],
        **pods.http_probes(worker.health_port),
        "resources": pods.resources(worker.memory_mib, worker.cpu_millicores),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.secret_mount(), pods.tmp_mount()],
    }
    pod_spec = {
        **pods.pod_spec_base(service_account, budget.kill_deadline_seconds),
        "containers": [container],
        "volumes": [
            pods.secret_volume(redis_secret_name(spec), redis_url_secret_key(spec), REDIS_URL_FILE_NAME),
            pods.tmp_volume(),
        ],
        "topologySpreadConstraints": pods.topology_spread(selector),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(
            worker_name(spec),
            spec.kubernetes.namespace,
            labels,
            image=spec.image,
            network_policies=spec.kubernetes.network_policies,
        ),
        "spec": {
            "replicas": worker.replicas,
            "selector": {"matchLabels": selector},
            "strategy": pods.rolling_update(worker.replicas),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
