"""The job dashboard on ECS (`dashboard.enabled`): its own task definition and service, never public.

- One task (desiredCount 1), the same image running `killsafe-dashboard`, with no load balancer: it is
  never in the ALB target group, and the web tier's security group is not its group.
- Its security group admits the dashboard port only from `dashboard.allowed_from.cidrs` and
  `security_group_ids` (a VPN's, an auth proxy's); 0.0.0.0/0 and ::/0 are refused by the spec. Nothing
  listed: nobody can connect (ECS Exec is off), which is the closed default.
- The env is `app_env.dashboard_env` (bind addresses are the task's own: every address); the Redis URL
  and, for basic auth, the credential file arrive through the container `secrets` from Secrets Manager
  (`dashboard.auth.credentials_secret.name` is the secret's ARN, `.key` the JSON key holding the file),
  never in `environment`.
- Its own execution role reads exactly the Redis URL secret and that one credentials secret (so the web
  and worker execution role never can); its task role has no permissions.
- Container health check: the image's health CLI on the dashboard's unauthenticated /livez.
"""

from __future__ import annotations

from typing import Any

from killsafe import app_env, contract
from killsafe.ecs import health
from killsafe.ecs.iam import DASHBOARD_EXECUTION_ROLE
from killsafe.ecs.network import group_ref, rule
from killsafe.ecs.requests import AwsRequest
from killsafe.ecs.services import service_request
from killsafe.ecs.tasks import container_definition, task_definition
from killsafe.spec import DashboardCredentialsRef, WorkloadSpec

STOP_TIMEOUT_SECONDS = 10
"""Its requests are page loads and audited retries of a few Redis round trips: 10 s drains them."""


def credentials_secret(spec: WorkloadSpec) -> DashboardCredentialsRef | None:
    auth = app_env.dashboard_auth(spec)
    return auth.credentials_secret if auth.mode == "basic" else None


def environment(spec: WorkloadSpec) -> dict[str, str]:
    env = app_env.dashboard_env(spec, None, None)
    return {**env, contract.ENV_HEALTH_PORT: str(spec.dashboard.port)}


def secrets(spec: WorkloadSpec) -> list[dict[str, Any]]:
    secret = credentials_secret(spec)
    if secret is None:
        return []
    return [{"name": contract.ENV_DASHBOARD_CREDENTIALS, "valueFrom": f"{secret.name}:{secret.key}::"}]


def dashboard_task_definition(spec: WorkloadSpec) -> AwsRequest:
    dashboard = spec.dashboard
    container = container_definition(
        spec,
        "dashboard",
        command=dashboard.command,
        environment=environment(spec),
        memory_mib=dashboard.memory_mib,
        cpu_millicores=dashboard.cpu_millicores,
        stop_timeout=STOP_TIMEOUT_SECONDS,
        health_check=health.web_health_check(),
        secrets=secrets(spec),
    )
    container["portMappings"] = [
        {"name": "dashboard", "containerPort": dashboard.port, "protocol": "tcp", "appProtocol": "http"}
    ]
    return task_definition(spec, "dashboard", container, execution_role=DASHBOARD_EXECUTION_ROLE)


def ingress_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    """The dashboard port from each allowed source, one rule each (so each can be revoked alone)."""
    access = spec.dashboard.allowed_from
    port = spec.dashboard.port
    group = group_ref("dashboard")
    requests = [
        rule(f"dashboard-sg-ingress-cidr-{i}", "ingress", group, port, "dashboard users", cidr=cidr)
        for i, cidr in enumerate(access.cidrs)
    ]
    requests += [
        rule(f"dashboard-sg-ingress-sg-{i}", "ingress", group, port, "dashboard users", peer=source)
        for i, source in enumerate(access.security_group_ids)
    ]
    return requests


def dashboard_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    """Task definition and service (the group, roles and Redis access come with the other tiers')."""
    return [dashboard_task_definition(spec)]


def dashboard_service(spec: WorkloadSpec) -> AwsRequest:
    return service_request(spec, "dashboard", 1)


def credentials_arn(spec: WorkloadSpec) -> str | None:
    secret = credentials_secret(spec)
    return secret.name if secret is not None else None
