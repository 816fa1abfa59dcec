"""The web tier behind an existing ALB listener: a target group of task IPs and a listener rule.

On ECS "stop routing first" is the platform's job: a stopping web task is deregistered from the
target group, the ALB sends it no new requests and lets in-flight ones run for the deregistration
delay, and only then does ECS send SIGTERM. The delay is `prestop_seconds + max_request_seconds`
(the same allowance the Kubernetes preStop gives), shorter than the web stopTimeout (which adds a
5 s reserve), so the app drains whatever is left and exits before SIGKILL.

The ALB probes `/livez`, not `/readyz`: ECS replaces tasks the ALB reports unhealthy, so probing
readiness would turn a Redis outage into a restart loop of every web task.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.app_env import web_tier
from killsafe.ecs import health, names
from killsafe.ecs.requests import AwsRequest, Ref
from killsafe.spec import EcsLoadBalancerSpec, WorkloadSpec

TARGET_GROUP = "web-target-group"
DEREGISTRATION_DELAY = "deregistration_delay.timeout_seconds"


def deregistration_delay_seconds(spec: WorkloadSpec) -> int:
    web = web_tier(spec)
    return web.prestop_seconds + web.max_request_seconds


def _conditions(lb: EcsLoadBalancerSpec) -> list[dict[str, Any]]:
    conditions: list[dict[str, Any]] = [
        {"Field": "path-pattern", "PathPatternConfig": {"Values": list(lb.path_patterns)}}
    ]
    if lb.host_headers:
        conditions.append({"Field": "host-header", "HostHeaderConfig": {"Values": list(lb.host_headers)}})
    return conditions


def load_balancer_requests(spec: WorkloadSpec, lb: EcsLoadBalancerSpec) -> list[AwsRequest]:
    web = web_tier(spec)
    target_group = Ref(TARGET_GROUP, "arn")
    return [
        AwsRequest(
            TARGET_GROUP,
            "elbv2",
            "CreateTargetGroup",
            {
                "Name": names.target_group_name(spec),
                "Protocol": "HTTP",
                "ProtocolVersion": "HTTP1",
                "Port": web.port,
                "VpcId": spec.ecs.vpc_id,
                "TargetType": "ip",
                "IpAddressType": "ipv4",
                "HealthCheckEnabled": True,
                "HealthCheckProtocol": "HTTP",
                "HealthCheckPort": "traffic-port",
                "HealthCheckPath": contract.LIVE_PATH,
                "HealthCheckIntervalSeconds": health.WEB_INTERVAL_SECONDS,
                "HealthCheckTimeoutSeconds": health.TIMEOUT_SECONDS,
                "HealthyThresholdCount": health.ALB_HEALTHY_THRESHOLD,
                "UnhealthyThresholdCount": health.ALB_UNHEALTHY_THRESHOLD,
                "Matcher": {"HttpCode": "200"},
                "Tags": names.key_value_tags(spec, "web"),
            },
        ),
        AwsRequest(
            f"{TARGET_GROUP}-attributes",
            "elbv2",
            "ModifyTargetGroupAttributes",
            {
                "TargetGroupArn": target_group,
                "Attributes": [{"Key": DEREGISTRATION_DELAY, "Value": str(deregistration_delay_seconds(spec))}],
            },
            amends=TARGET_GROUP,
        ),
        AwsRequest(
            "web-listener-rule",
            "elbv2",
            "CreateRule",
            {
                "ListenerArn": lb.listener_arn,
                "Priority": lb.priority,
                "Conditions": _conditions(lb),
                "Actions": [{"Type": "forward", "TargetGroupArn": target_group}],
                "Tags": names.key_value_tags(spec, "web"),
            },
        ),
    ]
