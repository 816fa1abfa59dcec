"""Every AWS name of an ECS workload, derived from the workload name, and the tags every resource carries.

Some AWS names are short (target groups 32 characters, replication group ids 40, IAM roles 64); a
name past its limit keeps a readable prefix and ends in a stable hash of the full name, so it stays
unique and the same on every render.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from killsafe.spec import WorkloadSpec

Tier = Literal["web", "worker", "dashboard"]

TARGET_GROUP_NAME_MAX = 32
REPLICATION_GROUP_ID_MAX = 40
IAM_ROLE_NAME_MAX = 64


def fit(name: str, limit: int) -> str:
    """`name`, or a `limit`-long prefix of it ending in `-<4 hex of its sha256>`."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:4]
    return f"{name[: limit - 5].rstrip('-')}-{digest}"


def cluster_name(spec: WorkloadSpec) -> str:
    return spec.name


def service_name(spec: WorkloadSpec, tier: Tier) -> str:
    return f"{spec.name}-{tier}"


def family(spec: WorkloadSpec, tier: Tier) -> str:
    """Task definition family: every deploy registers a new revision of it."""
    return f"{spec.name}-{tier}"


def log_group_name(spec: WorkloadSpec) -> str:
    return f"/ecs/{spec.name}"


def security_group_name(spec: WorkloadSpec, role: Literal["web", "worker", "redis", "dashboard"]) -> str:
    return f"{spec.name}-{role}"


def execution_role_name(spec: WorkloadSpec) -> str:
    """Used by ECS itself (image pull, logs, secrets), never by the app."""
    return fit(f"{spec.name}-ecs-execution", IAM_ROLE_NAME_MAX)


def dashboard_execution_role_name(spec: WorkloadSpec) -> str:
    """The dashboard's own execution role: only it may read the dashboard's credentials secret."""
    return fit(f"{spec.name}-dashboard-ecs-execution", IAM_ROLE_NAME_MAX)


def task_role_name(spec: WorkloadSpec, tier: Tier) -> str:
    """What the app's own code may do on AWS (nothing by default)."""
    return fit(f"{spec.name}-{tier}-task", IAM_ROLE_NAME_MAX)


def target_group_name(spec: WorkloadSpec) -> str:
    return fit(f"{spec.name}-web", TARGET_GROUP_NAME_MAX)


def replication_group_id(spec: WorkloadSpec) -> str:
    """Must start with a letter (a workload name may start with a digit)."""
    base = f"{spec.name}-redis" if spec.name[0].isalpha() else f"r-{spec.name}-redis"
    return fit(base, REPLICATION_GROUP_ID_MAX)


def cache_parameter_group_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-redis-queues"


def cache_subnet_group_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-redis"


def redis_secret_name(spec: WorkloadSpec) -> str:
    """The generated Secrets Manager secret holding the ElastiCache URL (JSON key `url`)."""
    return f"{spec.name}/redis"


def tags(spec: WorkloadSpec, component: str) -> dict[str, str]:
    """Tags on every resource: find everything of a workload, and which part it is."""
    return {"killsafe:workload": spec.name, "killsafe:component": component, "managed-by": "killsafe"}


def key_value_tags(spec: WorkloadSpec, component: str, *, lower: bool = False) -> list[dict[str, str]]:
    """`tags` as the [{Key, Value}] list most APIs take (ECS spells it [{key, value}])."""
    k, v = ("key", "value") if lower else ("Key", "Value")
    return [{k: key, v: value} for key, value in tags(spec, component).items()]
