"""The worker Deployment: queue consumers whose every deadline comes from the shutdown budget."""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.kubernetes.app_env import shared_env, with_user_env
from killsafe.kubernetes.app_pods import app_container, app_deployment
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
    container = app_container(
        spec,
        "worker",
        command=worker.command,
        env=worker_env(spec),
        port_name=HEALTH_PORT_NAME,
        port=worker.health_port,
        memory_mib=worker.memory_mib,
        cpu_millicores=worker.cpu_millicores,
    )
    return app_deployment(
        spec,
        "worker",
        name=worker_name(spec),
        container=container,
        replicas=worker.replicas,
        grace_seconds=shutdown_budget(worker).kill_deadline_seconds,
        service_account=service_account,
    )
