"""Fargate task definitions for web and worker: one image, two commands, every deadline from the budget.

Each task has one essential container, hardened like the Kubernetes pods: a non-root numeric user,
a read-only root filesystem with a writable /tmp volume, all capabilities dropped, no privileged
mode. Memory is a hard limit (`memory`, the OOM line) equal to the reservation, as request = limit on
Kubernetes; the task size is the smallest Fargate size that holds the container (`fargate.py`).

The worker's `stopTimeout` is the kill deadline (`max_job_seconds + drain_margin_seconds`), always
set (Fargate's default is 30 s); the web's is its grace. The Redis URL reaches both as `REDIS_URL`
through `secrets` (ECS reads Secrets Manager at start), never through `environment`.
"""

from __future__ import annotations

from typing import Any

from killsafe import app_env, contract
from killsafe.budget import shutdown_budget, web_budget
from killsafe.ecs import health, names
from killsafe.ecs.alarms import metrics_namespace
from killsafe.ecs.fargate import cpu_units, fargate_task_size
from killsafe.ecs.iam import EXECUTION_ROLE, task_role_key
from killsafe.ecs.logs import log_configuration
from killsafe.ecs.names import Tier
from killsafe.ecs.redis import redis_url_value_from
from killsafe.ecs.requests import AwsRequest, Ref
from killsafe.spec import WorkloadSpec

RUN_AS_USER = "10001:10001"
"""The image's numeric UID/GID (as on Kubernetes): never root, never a host user."""
TMP_VOLUME = "tmp"


def task_definition_key(tier: Tier) -> str:
    return f"{tier}-task-definition"


def worker_environment(spec: WorkloadSpec) -> dict[str, str]:
    """The target-neutral worker env (the Redis URL comes from `secrets`), plus the switch that makes the
    worker publish its metrics as CloudWatch EMF lines (what the alarms and the autoscaler read)."""
    return {**app_env.worker_env(spec, redis_url_file=None), contract.ENV_EMF_NAMESPACE: metrics_namespace(spec)}


def web_environment(spec: WorkloadSpec) -> dict[str, str]:
    """The web env, plus the port the image's health CLI probes (the web app serves /livez on it). The
    web's Prometheus metrics listener is off (port 0): on ECS nothing scrapes it, and a port that no
    security group opens is one that should not listen."""
    env = app_env.web_env(spec, redis_url_file=None, metrics_port=0)
    return {**env, contract.ENV_HEALTH_PORT: str(app_env.web_tier(spec).port)}


def container_definition(
    spec: WorkloadSpec,
    tier: Tier,
    *,
    command: list[str],
    entry_point: list[str] | None = None,
    environment: dict[str, str],
    memory_mib: int,
    cpu_millicores: int,
    stop_timeout: int,
    health_check: dict[str, Any],
    secrets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`command` has Docker CMD semantics (the image's ENTRYPOINT, e.g. dumb-init, stays PID 1); only an
    explicit `entry_point` (the spec's `entrypoint`) replaces the image's ENTRYPOINT, as on Kubernetes."""
    container: dict[str, Any] = {
        "name": tier,
        "image": spec.image,
        "essential": True,
        **({"entryPoint": list(entry_point)} if entry_point is not None else {}),
        "command": list(command),
        "cpu": cpu_units(cpu_millicores),
        "memory": memory_mib,
        "memoryReservation": memory_mib,
        "environment": [{"name": name, "value": value} for name, value in environment.items()],
        "secrets": [{"name": contract.ENV_REDIS_URL, "valueFrom": redis_url_value_from(spec)}, *(secrets or [])],
        "stopTimeout": stop_timeout,
        "healthCheck": health_check,
        "user": RUN_AS_USER,
        "readonlyRootFilesystem": True,
        "privileged": False,
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}},
        "mountPoints": [{"sourceVolume": TMP_VOLUME, "containerPath": "/tmp", "readOnly": False}],
        "logConfiguration": log_configuration(spec, tier),
    }
    return container


def task_definition(
    spec: WorkloadSpec, tier: Tier, container: dict[str, Any], execution_role: str = EXECUTION_ROLE
) -> AwsRequest:
    size = fargate_task_size(container["cpu"], container["memory"])
    return AwsRequest(
        task_definition_key(tier),
        "ecs",
        "RegisterTaskDefinition",
        {
            "family": names.family(spec, tier),
            "taskRoleArn": Ref(task_role_key(tier), "arn"),
            "executionRoleArn": Ref(execution_role, "arn"),
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": str(size.cpu),
            "memory": str(size.memory),
            "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": spec.ecs.cpu_architecture},
            "containerDefinitions": [container],
            "volumes": [{"name": TMP_VOLUME}],
            "tags": names.key_value_tags(spec, tier, lower=True),
        },
    )


def worker_task_definition(spec: WorkloadSpec) -> AwsRequest:
    worker = spec.worker
    container = container_definition(
        spec,
        "worker",
        command=worker.command,
        entry_point=worker.entrypoint,
        environment=worker_environment(spec),
        memory_mib=worker.memory_mib,
        cpu_millicores=worker.cpu_millicores,
        stop_timeout=shutdown_budget(worker).kill_deadline_seconds,
        health_check=health.worker_health_check(spec),
    )
    return task_definition(spec, "worker", container)


def web_task_definition(spec: WorkloadSpec) -> AwsRequest:
    web = app_env.web_tier(spec)
    container = container_definition(
        spec,
        "web",
        command=web.command,
        entry_point=web.entrypoint,
        environment=web_environment(spec),
        memory_mib=web.memory_mib,
        cpu_millicores=web.cpu_millicores,
        stop_timeout=web_budget(web).kill_deadline_seconds,
        health_check=health.web_health_check(),
    )
    container["portMappings"] = [{"name": "http", "containerPort": web.port, "protocol": "tcp", "appProtocol": "http"}]
    return task_definition(spec, "web", container)
