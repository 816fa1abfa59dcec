"""The worker Deployment: queue consumers whose every deadline comes from the shutdown budget."""

from __future__ import annotations

from typing import Any

from killsafe.budget import shutdown_budget
from killsafe.kubernetes.app_env import worker_env
from killsafe.kubernetes.app_pods import app_container, app_deployment
from killsafe.kubernetes.probes import ProbeSet, probe_set
from killsafe.spec import WorkloadSpec

HEALTH_PORT_NAME = "health"


def worker_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-worker"


def worker_probes(spec: WorkloadSpec) -> ProbeSet:
    worker = spec.worker
    return probe_set(worker.health_port, worker.cpu_millicores, worker.lock_duration_seconds)


def worker_deployment(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    """terminationGracePeriodSeconds is the kill deadline; the worker drains until the (shorter)
    drain deadline and hands unfinished jobs back before the platform's SIGKILL."""
    worker = spec.worker
    probes = worker_probes(spec)
    container = app_container(
        spec,
        "worker",
        command=worker.command,
        entrypoint=worker.entrypoint,
        env=worker_env(spec),
        port_name=HEALTH_PORT_NAME,
        probes=probes,
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
        min_ready_seconds=probes.min_ready_seconds,
        service_account=service_account,
    )
