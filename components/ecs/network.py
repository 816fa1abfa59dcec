"""Security groups closed by default: nothing reaches a task or Redis unless a rule below says so.

    web     in: the web port from the ALB's security group only (no ALB: no ingress at all)
    worker  in: nothing (workers take no traffic; ECS runs the health check inside the task)
    dashboard in: its port from `dashboard.allowed_from` only (CIDRs, security groups; see dashboard.py)
    redis   in: 6379 from the web, worker (and dashboard) groups only;  out: nothing
    web, worker, dashboard out: Redis (its group, or the external ports), and HTTPS for the AWS APIs the
            platform calls on the task's behalf (ECR, CloudWatch Logs, Secrets Manager) through a NAT
            gateway or VPC endpoints, whose addresses are not known here
    ALB     out: the web port to the web group (added to the ALB's own group, so a closed ALB works)

No rule anywhere admits 0.0.0.0/0 or ::/0. AWS gives every new group an allow-all egress rule; the
`RevokeSecurityGroupEgress` requests remove it (under Pulumi the provider does, on create).
"""

from __future__ import annotations

from typing import Any, Literal

from killsafe import contract
from killsafe.ecs import names
from killsafe.ecs.requests import AwsRequest, Ref
from killsafe.spec import WorkloadSpec

Group = Literal["web", "worker", "redis", "dashboard"]
HTTPS_PORT = 443
ANYWHERE_IPV4 = "0.0.0.0/0"
DEFAULT_EGRESS = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": ANYWHERE_IPV4}]}
"""The allow-all egress rule AWS adds to every new VPC security group."""


def group_key(group: Group) -> str:
    return f"{group}-sg"


def group_ref(group: Group) -> Ref:
    return Ref(group_key(group), "id")


def group_requests(spec: WorkloadSpec, group: Group, description: str) -> list[AwsRequest]:
    key = group_key(group)
    return [
        AwsRequest(
            key,
            "ec2",
            "CreateSecurityGroup",
            {
                "GroupName": names.security_group_name(spec, group),
                "Description": description,
                "VpcId": spec.ecs.vpc_id,
                "TagSpecifications": [
                    {"ResourceType": "security-group", "Tags": names.key_value_tags(spec, f"{group}-network")}
                ],
            },
        ),
        AwsRequest(
            f"{key}-default-egress",
            "ec2",
            "RevokeSecurityGroupEgress",
            {"GroupId": group_ref(group), "IpPermissions": [DEFAULT_EGRESS]},
            amends=key,
        ),
    ]


def rule(
    key: str,
    direction: Literal["ingress", "egress"],
    group: str | Ref,
    port: int,
    description: str,
    *,
    peer: Ref | str | None = None,
    cidr: str | None = None,
) -> AwsRequest:
    permission: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if peer is not None:
        permission["UserIdGroupPairs"] = [{"GroupId": peer, "Description": description}]
    elif cidr is not None and ":" in cidr:
        permission["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": description}]
    else:
        permission["IpRanges"] = [{"CidrIp": cidr, "Description": description}]
    operation = "AuthorizeSecurityGroupIngress" if direction == "ingress" else "AuthorizeSecurityGroupEgress"
    return AwsRequest(key, "ec2", operation, {"GroupId": group, "IpPermissions": [permission]})


def app_groups(spec: WorkloadSpec) -> list[Group]:
    """The task groups that talk to Redis and the AWS APIs: web, worker and (when enabled) dashboard."""
    groups: list[Group] = ["web", "worker"] if spec.web is not None else ["worker"]
    return [*groups, "dashboard"] if spec.dashboard.enabled else groups


def network_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    tiers = app_groups(spec)
    elasticache = spec.redis.mode == "elasticache"
    requests: list[AwsRequest] = []
    for tier in tiers:
        requests += group_requests(spec, tier, f"{spec.name} {tier} tasks (killsafe)")
    if elasticache:
        requests += group_requests(spec, "redis", f"{spec.name} ElastiCache Redis (killsafe)")
    lb = spec.ecs.load_balancer
    if spec.web is not None and lb is not None:
        port = spec.web.port
        requests.append(
            rule(
                "web-sg-ingress-alb", "ingress", group_ref("web"), port, "HTTP from the ALB", peer=lb.security_group_id
            )
        )
        requests.append(
            rule(
                "alb-sg-egress-web",
                "egress",
                lb.security_group_id,
                port,
                f"{spec.name} web tasks",
                peer=group_ref("web"),
            )
        )
    for tier in tiers:
        group = group_ref(tier)
        requests.append(
            rule(
                f"{tier}-sg-egress-https",
                "egress",
                group,
                HTTPS_PORT,
                "AWS APIs (ECR, logs, secrets)",
                cidr=ANYWHERE_IPV4,
            )
        )
        if elasticache:
            requests.append(
                rule(f"{tier}-sg-egress-redis", "egress", group, contract.REDIS_PORT, "Redis", peer=group_ref("redis"))
            )
            requests.append(
                rule(
                    f"redis-sg-ingress-{tier}",
                    "ingress",
                    group_ref("redis"),
                    contract.REDIS_PORT,
                    f"Redis from the {tier} tasks",
                    peer=group,
                )
            )
        else:
            for port in spec.ecs.external_redis_ports:
                requests.append(
                    rule(f"{tier}-sg-egress-redis-{port}", "egress", group, port, "external Redis", cidr=ANYWHERE_IPV4)
                )
    return requests
