"""The policy pack's policies over synthetic Pulumi resources, offline (no engine, no CLI)."""

from __future__ import annotations

import json
import runpy
from collections.abc import Mapping
from typing import Any

import pulumi_policy
import pytest

from killsafe.checks import RULE_TITLES
from killsafe.lint import RULES
from killsafe.policy import pack
from killsafe.policy.policies import POLICIES, RULE_GROUPS, Policy

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
BY_NAME = {p.name: p for p in POLICIES}


def worker(**pod: Any) -> dict[str, Any]:
    container = {"name": "worker", "image": "ghcr.io/acme/jobs:1", "args": ["killsafe-worker"], **pod.pop("c", {})}
    return {
        "metadata": {"name": "jobs-worker", "labels": {"app.kubernetes.io/component": "worker"}},
        "spec": {
            "replicas": 2,
            "strategy": pod.pop("strategy", {"rollingUpdate": {"maxUnavailable": 0}}),
            "selector": {"matchLabels": {"app": "jobs-worker"}},
            "template": {
                "metadata": {"labels": {"app": "jobs-worker"}, "annotations": {"killsafe.dev/max-job-seconds": "60"}},
                "spec": {"containers": [container], **pod},
            },
        },
    }


GOOD_CONTAINER = {
    "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
    "resources": {"limits": {"memory": "512Mi"}},
}
GOOD_WORKER = worker(terminationGracePeriodSeconds=75, c=GOOD_CONTAINER)


def violations(name: str, resource_type: str, props: Mapping[str, Any]) -> list[str]:
    return [f.rule for f in BY_NAME[name].check(resource_type, props, "urn:pulumi:dev::p::t::r")]


def test_a_bare_worker_deployment_violates_grace_probes_and_memory() -> None:
    bare = worker()
    assert violations("killsafe-shutdown-budget", DEPLOYMENT, bare) == ["KS001"]
    assert violations("killsafe-health-checks", DEPLOYMENT, bare) == ["KS002"]
    assert violations("killsafe-memory-limits", DEPLOYMENT, bare) == ["KS003"]
    assert violations("killsafe-health-checks-advisory", DEPLOYMENT, bare) == ["KS002"]  # no readinessProbe


def test_a_good_worker_passes_every_policy() -> None:
    for policy in POLICIES:
        assert policy.check(DEPLOYMENT, GOOD_WORKER) == [], policy.name


def test_grace_shorter_than_the_declared_budget() -> None:
    short = worker(terminationGracePeriodSeconds=30, c=GOOD_CONTAINER)
    (finding,) = BY_NAME["killsafe-shutdown-budget"].check(DEPLOYMENT, short, "urn:x")
    assert "30 s is shorter than the longest job (60 s" in finding.message and finding.file == "urn:x"
    assert finding.path == "spec.template.spec.terminationGracePeriodSeconds"


def test_statefulset_worker_and_recreate_strategy() -> None:
    recreate = worker(terminationGracePeriodSeconds=75, c=GOOD_CONTAINER, strategy={"type": "Recreate"})
    assert violations("killsafe-worker-rollout", DEPLOYMENT, recreate) == ["KS008"]
    assert violations("killsafe-memory-limits", "kubernetes:apps/v1:StatefulSet", worker()) == ["KS003"]


def test_web_and_worker_in_one_container() -> None:
    both = worker(
        terminationGracePeriodSeconds=75,
        c={**GOOD_CONTAINER, "args": ["sh", "-c", "uvicorn app:api & celery -A app worker"]},
    )
    assert violations("killsafe-web-worker-split", DEPLOYMENT, both) == ["KS004"]


def task(container: dict[str, Any], tags: dict[str, str] | None = None) -> dict[str, Any]:
    base = {"name": "worker", "image": "acme/jobs:1", "command": ["rq", "worker"]}
    return {
        "family": "jobs-worker",
        "cpu": "256",
        "memory": "512",
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": json.dumps([{**base, **container}]),
        "tags": tags or {},
    }


ECS_TASK = "aws:ecs/taskDefinition:TaskDefinition"


def test_ecs_task_definition_stop_timeout_and_health_check() -> None:
    assert violations("killsafe-shutdown-budget", ECS_TASK, task({})) == ["KS001"]
    assert violations("killsafe-health-checks", ECS_TASK, task({})) == ["KS002"]
    short = task({"stopTimeout": 30}, {"killsafe.dev/max-job-seconds": "90"})
    assert violations("killsafe-shutdown-budget", ECS_TASK, short) == ["KS001"]
    good = task(
        {"stopTimeout": 95, "healthCheck": {"command": ["CMD-SHELL", "curl -f localhost:8080/livez"]}},
        {"killsafe.dev/max-job-seconds": "90"},
    )
    assert [f for p in POLICIES for f in p.check(ECS_TASK, good)] == []
    assert violations("killsafe-shutdown-budget", ECS_TASK, task({"stopTimeout": 200})) == ["KS001"]


def test_ecs_service_that_stops_workers_first_is_advisory() -> None:
    service = {"name": "jobs-worker", "deploymentMinimumHealthyPercent": 50}
    assert violations("killsafe-worker-rollout-advisory", "aws:ecs/service:Service", service) == ["KS008"]
    assert violations("killsafe-worker-rollout", "aws:ecs/service:Service", service) == []


@pytest.mark.parametrize(
    ("resource_type", "props"),
    [
        (
            "aws:ec2/securityGroup:SecurityGroup",
            {"ingress": [{"fromPort": 6379, "toPort": 6379, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}]},
        ),
        (
            "aws:ec2/securityGroup:SecurityGroup",
            {"ingress": [{"fromPort": 0, "toPort": 0, "protocol": "-1", "ipv6CidrBlocks": ["::/0"]}]},
        ),
        (
            "aws:ec2/securityGroupRule:SecurityGroupRule",
            {"type": "ingress", "fromPort": 6000, "toPort": 7000, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]},
        ),
        (
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            {"fromPort": 6379, "toPort": 6379, "ipProtocol": "tcp", "cidrIpv4": "0.0.0.0/0"},
        ),
    ],
)
def test_open_ingress_to_redis(resource_type: str, props: dict[str, Any]) -> None:
    assert violations("killsafe-redis-not-public", resource_type, props) == ["KS011"]


def test_open_https_or_private_redis_ingress_is_fine() -> None:
    https = {"ingress": [{"fromPort": 443, "toPort": 443, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}]}
    private = {"ingress": [{"fromPort": 6379, "toPort": 6379, "protocol": "tcp", "cidrBlocks": ["10.0.0.0/16"]}]}
    for props in (https, private):
        assert violations("killsafe-redis-not-public", "aws:ec2/securityGroup:SecurityGroup", props) == []
    egress = {"type": "egress", "fromPort": 6379, "toPort": 6379, "cidrBlocks": ["0.0.0.0/0"]}
    assert violations("killsafe-redis-not-public", "aws:ec2/securityGroupRule:SecurityGroupRule", egress) == []


def test_elasticache_parameter_group_eviction() -> None:
    group = "aws:elasticache/parameterGroup:ParameterGroup"
    lru = {"name": "queue", "family": "redis7", "parameters": [{"name": "maxmemory-policy", "value": "allkeys-lru"}]}
    safe = {"name": "queue", "family": "redis7", "parameters": [{"name": "maxmemory-policy", "value": "noeviction"}]}
    assert violations("killsafe-redis-noeviction", group, lru) == ["KS007"]
    assert violations("killsafe-redis-noeviction", group, safe) == []


UNIT = """[Unit]
Description=jobs worker %i

[Service]
ExecStart=/opt/jobs/bin/celery -A jobs \\
    worker
KillMode=process
TimeoutStopSec=75
WatchdogSec=30
Restart=always
MemoryMax=512M
"""


def test_a_command_that_installs_a_unit() -> None:
    command = {"create": "install -D -m 644 /dev/stdin /etc/systemd/system/jobs-worker@.service", "stdin": UNIT}
    assert violations("killsafe-shutdown-budget", "command:remote:Command", command) == ["KS001"]
    heredoc = {"create": f"cat > /etc/systemd/system/jobs-worker@.service <<'EOF'\n{UNIT}EOF\nsystemctl daemon-reload"}
    found = BY_NAME["killsafe-shutdown-budget"].check("command:local:Command", heredoc)
    assert [(f.rule, f.path) for f in found] == [("KS001", "[Service] KillMode")]
    fixed = {"create": command["create"], "stdin": UNIT.replace("KillMode=process", "KillMode=mixed")}
    assert violations("killsafe-shutdown-budget", "command:remote:Command", fixed) == []


def test_pdb_policies_per_resource_and_across_the_stack() -> None:
    pdb = "kubernetes:policy/v1:PodDisruptionBudget"
    zero = {"metadata": {"name": "w"}, "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "x"}}}}
    assert violations("killsafe-pdb-allows-eviction", pdb, zero) == ["KS010"]
    all_replicas = {
        "metadata": {"name": "w"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "jobs-worker"}}},
    }
    policy = BY_NAME["killsafe-pdb-allows-eviction"]
    assert policy.check(pdb, all_replicas) == []  # alone, the PDB does not say how many replicas there are
    stack = [(DEPLOYMENT, GOOD_WORKER, "urn:d"), (pdb, all_replicas, "urn:p")]
    (finding,) = policy.check_stack(stack)
    assert finding.rule == "KS010" and finding.file == "urn:p" and "2 replica(s)" in finding.message


def test_every_rule_code_has_a_policy_and_a_title() -> None:
    covered = {code for codes in RULE_GROUPS.values() for code in codes}
    assert covered == set(RULES)
    assert covered <= set(RULE_TITLES)
    assert {p.enforcement for p in POLICIES} == {"mandatory", "advisory"}
    assert len(POLICIES) == 2 * len(RULE_GROUPS)


def _args(resource_type: str, props: Mapping[str, Any]) -> pulumi_policy.ResourceValidationArgs:
    opts = pulumi_policy.PolicyResourceOptions(False, [], None, [], pulumi_policy.PolicyCustomTimeouts(0, 0, 0), [])
    return pulumi_policy.ResourceValidationArgs(resource_type, props, "urn:pulumi:dev::p::t::w", "w", opts, None)


def test_the_pack_registers_every_policy_with_its_level(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: dict[str, Any] = {}

    def fake_pack(name: str, policies: list[pulumi_policy.Policy], **kwargs: Any) -> None:
        recorded.update(name=name, policies=policies)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", fake_pack)
    monkeypatch.setattr(pack, "PolicyPack", fake_pack)
    runpy.run_module("killsafe.policy.__main__", run_name="__main__")
    registered = {p.name: p for p in recorded["policies"]}
    assert recorded["name"] == "killsafe"
    assert set(registered) == {n for p in POLICIES for n in (p.name, f"{p.name}-stack")}
    for policy in POLICIES:
        level = (
            pulumi_policy.EnforcementLevel.MANDATORY
            if policy.enforcement == "mandatory"
            else (pulumi_policy.EnforcementLevel.ADVISORY)
        )
        assert registered[policy.name].enforcement_level == level


def test_a_pack_policy_reports_through_pulumi_policy() -> None:
    reports: list[tuple[str, str | None]] = []
    policy = next(p for p in pack.pack_policies() if p.name == "killsafe-memory-limits")
    assert isinstance(policy, pulumi_policy.ResourceValidationPolicy)
    policy.validate(_args(DEPLOYMENT, worker()), lambda message, urn: reports.append((message, urn)))
    assert len(reports) == 1 and reports[0][0].startswith("KS003 Deployment/jobs-worker (spec.template.spec.")
    reports.clear()
    policy.validate(_args(DEPLOYMENT, GOOD_WORKER), lambda message, urn: reports.append((message, urn)))
    assert reports == []


def test_policy_is_a_plain_function_of_type_and_props() -> None:
    assert isinstance(BY_NAME["killsafe-memory-limits"], Policy)
    assert BY_NAME["killsafe-memory-limits"].check("aws:s3/bucket:Bucket", {"bucket": "x"}) == []


def test_values_still_unknown_in_a_preview_are_skipped_not_fatal() -> None:
    unknown = object()
    for policy in POLICIES:
        assert policy.check(ECS_TASK, {"family": "x", "containerDefinitions": unknown, "tags": unknown}) == []
        assert policy.check("aws:ec2/securityGroup:SecurityGroup", {"ingress": unknown}) == []
        assert policy.check("aws:elasticache/parameterGroup:ParameterGroup", {"parameters": unknown}) == []
