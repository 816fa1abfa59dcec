"""Each checklist rule fires on the unsafe variant of the ECS requests the builder produces, and only then."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from killsafe.checks import RULE_TITLES
from killsafe.ecs.build import wire_requests
from killsafe.ecs.checks import RULES, check_ecs
from killsafe.ecs.requests import AwsRequest
from tests.ecs.harness import ecs_spec

SPEC = ecs_spec()


def _one(requests: list[AwsRequest], key: str) -> dict[str, Any]:
    (found,) = [r for r in requests if r.key == key]
    return found.params


def _worker(requests: list[AwsRequest]) -> dict[str, Any]:
    (container,) = _one(requests, "worker-task-definition")["containerDefinitions"]
    return dict(container)


def _set_worker(requests: list[AwsRequest], **fields: Any) -> None:
    _one(requests, "worker-task-definition")["containerDefinitions"][0].update(fields)


def _drop_worker(requests: list[AwsRequest], field: str) -> None:
    _one(requests, "worker-task-definition")["containerDefinitions"][0].pop(field)


def _policy(requests: list[AwsRequest], statement: dict[str, Any]) -> None:
    params = _one(requests, "execution-role-policy")
    document = json.loads(params["PolicyDocument"])
    document["Statement"].append(statement)
    params["PolicyDocument"] = json.dumps(document)


def _env(requests: list[AwsRequest], name: str, value: str) -> None:
    _one(requests, "worker-task-definition")["containerDefinitions"][0]["environment"].append(
        {"name": name, "value": value}
    )


MUTATIONS: dict[str, tuple[str, Callable[[list[AwsRequest]], Any]]] = {
    "stopTimeout unset": ("KS001", lambda rs: _drop_worker(rs, "stopTimeout")),
    "stopTimeout short": ("KS001", lambda rs: _set_worker(rs, stopTimeout=30)),
    "drain deadline past stopTimeout": (
        "KS001",
        lambda rs: [
            e.update(value="500")
            for e in _worker(rs)["environment"]
            if e["name"] == "KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS"
        ],
    ),
    "no health check": ("KS002", lambda rs: _drop_worker(rs, "healthCheck")),
    "readiness health check": (
        "KS002",
        lambda rs: _worker(rs)["healthCheck"].update(
            command=["CMD", "killsafe-worker", "healthcheck", "--probe", "both"]
        ),
    ),
    "health interval out of range": ("KS002", lambda rs: _worker(rs)["healthCheck"].update(interval=3)),
    "alb probes readiness": ("KS002", lambda rs: _one(rs, "web-target-group").update(HealthCheckPath="/readyz")),
    "no memory": ("KS003", lambda rs: _drop_worker(rs, "memory")),
    "not a fargate size": ("KS003", lambda rs: _one(rs, "worker-task-definition").update(memory="3000")),
    "one task runs both": (
        "KS004",
        lambda rs: _one(rs, "worker-task-definition")["containerDefinitions"].append(
            {**_one(rs, "web-task-definition")["containerDefinitions"][0]}
        ),
    ),
    "worker behind the alb": (
        "KS004",
        lambda rs: _one(rs, "worker-service").update(
            loadBalancers=[{"targetGroupArn": "x", "containerName": "worker"}]
        ),
    ),
    "dashboard behind the alb": (
        "KS004",
        lambda rs: _one(rs, "dashboard-service").update(
            loadBalancers=[{"targetGroupArn": "x", "containerName": "dashboard"}]
        ),
    ),
    "dashboard runs the web task": (
        "KS004",
        lambda rs: _one(rs, "dashboard-service").update(taskDefinition=_one(rs, "web-service")["taskDefinition"]),
    ),
    "dashboard in the web security group": (
        "KS004",
        lambda rs: _one(rs, "dashboard-service")["networkConfiguration"]["awsvpcConfiguration"].update(
            securityGroups=_one(rs, "web-service")["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]
        ),
    ),
    "root user": ("KS005", lambda rs: _set_worker(rs, user="0")),
    "writable root fs": ("KS005", lambda rs: _set_worker(rs, readonlyRootFilesystem=False)),
    "public ip": (
        "KS005",
        lambda rs: _one(rs, "worker-service")["networkConfiguration"]["awsvpcConfiguration"].update(
            assignPublicIp="ENABLED"
        ),
    ),
    "ingress from anywhere": (
        "KS005",
        lambda rs: _one(rs, "redis-sg-ingress-worker")["IpPermissions"][0].update(IpRanges=[{"CidrIp": "0.0.0.0/0"}]),
    ),
    "ingress from anywhere v6": (
        "KS005",
        lambda rs: _one(rs, "web-sg-ingress-alb")["IpPermissions"][0].update(Ipv6Ranges=[{"CidrIpv6": "::/0"}]),
    ),
    "wildcard action": ("KS005", lambda rs: _policy(rs, {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})),
    "redis url in environment": ("KS006", lambda rs: _env(rs, "REDIS_URL", "rediss://:hunter2@redis:6379/0")),
    "password in environment": ("KS006", lambda rs: _env(rs, "SMTP_PASSWORD", "hunter2")),
    "url with credentials in another variable": ("KS006", lambda rs: _env(rs, "CACHE", "redis://:pw@cache:6379")),
    "literal auth token": ("KS006", lambda rs: _one(rs, "redis").update(AuthToken="hunter2hunter2hunter2")),
    "evicting redis": (
        "KS007",
        lambda rs: _one(rs, "redis-parameter-group-values")["ParameterNameValues"][0].update(
            ParameterValue="allkeys-lru"
        ),
    ),
    "rollout drops capacity": (
        "KS008",
        lambda rs: _one(rs, "worker-service")["deploymentConfiguration"].update(minimumHealthyPercent=50),
    ),
    "no circuit breaker": (
        "KS008",
        lambda rs: _one(rs, "worker-service")["deploymentConfiguration"]["deploymentCircuitBreaker"].update(
            rollback=False
        ),
    ),
}


def fresh() -> list[AwsRequest]:
    return copy.deepcopy(wire_requests(SPEC))


def test_builder_output_is_clean() -> None:
    assert check_ecs(SPEC, fresh()) == []


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_rule_fires_on_unsafe_variant(case: str) -> None:
    rule, mutate = MUTATIONS[case]
    requests = fresh()
    mutate(requests)
    findings = check_ecs(SPEC, requests)
    assert {f.rule for f in findings} == {rule}, findings


def test_every_rule_has_a_mutation_and_means_what_it_means_on_kubernetes() -> None:
    assert {rule for rule, _ in MUTATIONS.values()} == set(RULES.rules)
    # KS009/KS010 are Kubernetes disruption rules; on ECS, Redis open to the internet (KS011 in lint) is
    # one case of KS005's "no 0.0.0.0/0 or ::/0 ingress anywhere", which the mutations above cover.
    assert set(RULES.rules) == set(RULE_TITLES) - {"KS009", "KS010", "KS011"}


def test_a_single_node_elasticache_is_a_warning_not_an_error() -> None:
    spec = ecs_spec(ecs__elasticache={"replicas": 0})
    findings = check_ecs(spec, wire_requests(spec))
    assert [(f.rule, f.level) for f in findings] == [("KS007", "warning")]
    assert "ElastiCache offers no AOF" in findings[0].message


def test_missing_worker_objects_are_findings() -> None:
    requests = [r for r in fresh() if r.key not in ("worker-task-definition", "worker-service")]
    assert {f.rule for f in check_ecs(SPEC, requests)} == {"KS001", "KS004"}
