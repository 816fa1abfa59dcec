"""The ECS cluster (or an existing one) and one Fargate service per tier.

Both services roll out without dropping capacity (minimumHealthyPercent 100, maximumPercent 200: new
tasks start and turn healthy before old ones get SIGTERM) and with the deployment circuit breaker on
and rolling back: when new tasks keep failing to start or to turn healthy (ECS's threshold is half the
desired count, clamped to 3..200 failed tasks) the deploy stops and returns to the last good revision.
Tasks run in the private subnets without a public IP; ECS Exec is off.
"""

from __future__ import annotations

from typing import Any

from killsafe.ecs import names
from killsafe.ecs.fargate import PLATFORM_VERSION
from killsafe.ecs.health import START_PERIOD_SECONDS
from killsafe.ecs.load_balancer import TARGET_GROUP
from killsafe.ecs.names import Tier
from killsafe.ecs.network import group_ref
from killsafe.ecs.requests import AwsRequest, Ref
from killsafe.ecs.tasks import task_definition_key
from killsafe.spec import WorkloadSpec

CLUSTER = "cluster"
MINIMUM_HEALTHY_PERCENT = 100
MAXIMUM_PERCENT = 200


def service_key(tier: Tier) -> str:
    return f"{tier}-service"


def cluster_ref(spec: WorkloadSpec) -> str | Ref:
    return spec.ecs.cluster_arn if spec.ecs.cluster_arn is not None else Ref(CLUSTER, "arn")


def cluster_request(spec: WorkloadSpec) -> AwsRequest:
    insights = "enabled" if spec.ecs.container_insights else "disabled"
    return AwsRequest(
        CLUSTER,
        "ecs",
        "CreateCluster",
        {
            "clusterName": names.cluster_name(spec),
            "settings": [{"name": "containerInsights", "value": insights}],
            "tags": names.key_value_tags(spec, "cluster", lower=True),
        },
    )


def deployment_configuration() -> dict[str, Any]:
    return {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "maximumPercent": MAXIMUM_PERCENT,
        "minimumHealthyPercent": MINIMUM_HEALTHY_PERCENT,
    }


def service_request(spec: WorkloadSpec, tier: Tier, desired_count: int, *, port: int | None = None) -> AwsRequest:
    params: dict[str, Any] = {
        "cluster": cluster_ref(spec),
        "serviceName": names.service_name(spec, tier),
        "taskDefinition": Ref(task_definition_key(tier), "arn"),
        "desiredCount": desired_count,
        "launchType": "FARGATE",
        "platformVersion": PLATFORM_VERSION,
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": list(spec.ecs.subnets or ()),
                "securityGroups": [group_ref(tier)],
                "assignPublicIp": "DISABLED",
            }
        },
        "deploymentConfiguration": deployment_configuration(),
        "deploymentController": {"type": "ECS"},
        "schedulingStrategy": "REPLICA",
        "enableECSManagedTags": True,
        "propagateTags": "SERVICE",
        "enableExecuteCommand": False,
        "tags": names.key_value_tags(spec, tier, lower=True),
    }
    if port is not None:
        params["loadBalancers"] = [
            {"targetGroupArn": Ref(TARGET_GROUP, "arn"), "containerName": tier, "containerPort": port}
        ]
        params["healthCheckGracePeriodSeconds"] = START_PERIOD_SECONDS
    return AwsRequest(service_key(tier), "ecs", "CreateService", params)
