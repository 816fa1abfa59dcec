"""Closed security groups and least-privilege IAM, on the built requests and on the mocked stack.

IAM statements are judged with policy_sentry's database of AWS actions (which actions exist and which
resource types each can be narrowed to) and cloudsplaining's risk checks, not with killsafe's own code:
`*` is only acceptable for an action that has no resource type at all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudsplaining.scan.policy_document import PolicyDocument
from policy_sentry.querying.actions import get_action_data

from killsafe.ecs import build
from killsafe.ecs.component import EcsWorkload
from tests.ecs.harness import VARIANTS, aws_children, ecs_spec, run_aws
from tests.kubernetes.test_component import wire_json

OPEN = {"0.0.0.0/0", "::/0"}
INGRESS_TYPE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_TYPE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"


def _wire(variant: str, operation: str) -> list[dict[str, Any]]:
    return [r.wire().params for r in build.build_requests(VARIANTS[variant]()) if r.operation == operation]


def test_no_security_group_in_the_mocked_stack_admits_the_internet() -> None:
    """Acceptance 3: every ingress rule the component creates names a source security group."""
    for make in VARIANTS.values():
        spec = make()
        run = run_aws(lambda spec=spec: EcsWorkload("emails", spec))
        assert run.error is None
        groups = [c for c in aws_children(run) if c.type == "aws:ec2/securityGroup:SecurityGroup"]
        assert groups
        for group in groups:
            assert "ingress" not in group.inputs and "egress" not in group.inputs, "no inline rules"
        ingress = [c for c in aws_children(run) if c.type == INGRESS_TYPE]
        for rule in ingress:
            assert rule.inputs.get("cidrIpv4") not in OPEN and rule.inputs.get("cidrIpv6") not in OPEN
            assert "prefixListId" not in rule.inputs
            if "cidrIpv4" in rule.inputs or "cidrIpv6" in rule.inputs:  # only the dashboard's own allow-list
                assert rule.inputs["securityGroupId"] == "emails-dashboard-sg-id", rule.name
                assert wire_json(rule.inputs["fromPort"]) == wire_json(rule.inputs["toPort"]) == spec.dashboard.port
            else:
                assert rule.inputs["referencedSecurityGroupId"]
        for rule in (c for c in aws_children(run) if c.type == EGRESS_TYPE):
            if rule.inputs.get("cidrIpv4") in OPEN:
                assert wire_json(rule.inputs["fromPort"]) in (443, *spec.ecs.external_redis_ports), rule.name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_rules_are_exactly_the_designed_ones(variant: str) -> None:
    spec = VARIANTS[variant]()
    rules = set()
    for operation in ("AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress"):
        for params in _wire(variant, operation):
            (permission,) = params["IpPermissions"]
            sources = [p["GroupId"] for p in permission.get("UserIdGroupPairs", [])]
            sources += [r["CidrIp"] for r in permission.get("IpRanges", [])]
            sources += [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
            assert len(sources) == 1 and permission["FromPort"] == permission["ToPort"]
            assert permission["IpProtocol"] == "tcp"
            rules.add(
                (
                    operation.removeprefix("AuthorizeSecurityGroup"),
                    params["GroupId"],
                    permission["FromPort"],
                    sources[0],
                )
            )
    expected = set()
    tiers = ["web", "worker"] if spec.web is not None else ["worker"]
    if spec.dashboard.enabled:
        tiers.append("dashboard")
        access = spec.dashboard.allowed_from
        for source in [*access.cidrs, *access.security_group_ids]:
            expected.add(("Ingress", "${dashboard-sg.id}", spec.dashboard.port, source))
    for tier in tiers:
        expected.add(("Egress", f"${{{tier}-sg.id}}", 443, "0.0.0.0/0"))
        if spec.redis.mode == "elasticache":
            expected.add(("Egress", f"${{{tier}-sg.id}}", 6379, "${redis-sg.id}"))
            expected.add(("Ingress", "${redis-sg.id}", 6379, f"${{{tier}-sg.id}}"))
        else:
            expected.add(("Egress", f"${{{tier}-sg.id}}", 6379, "0.0.0.0/0"))
    lb = spec.ecs.load_balancer
    if lb is not None:
        expected.add(("Ingress", "${web-sg.id}", 8000, lb.security_group_id))
        expected.add(("Egress", lb.security_group_id, 8000, "${web-sg.id}"))
    assert rules == expected
    revoked = {p["GroupId"] for p in _wire(variant, "RevokeSecurityGroupEgress")}
    assert revoked == {f"${{{g}-sg.id}}" for g in [*tiers, *(["redis"] if spec.redis.mode == "elasticache" else [])]}


def _statements(variant: str) -> list[dict[str, Any]]:
    documents = [json.loads(p["PolicyDocument"]) for p in _wire(variant, "PutRolePolicy")]
    return [s for d in documents for s in d["Statement"]]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _resource_formats(action: str) -> list[str]:
    service, name = action.split(":")
    data = get_action_data(service, name)
    assert data, f"{action} is not an AWS action (policy_sentry)"
    return [entry["resource_arn_format"] for entry in data[service]]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_iam_statement_allows_star_where_a_narrower_resource_exists(variant: str) -> None:
    statements = _statements(variant)
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in _actions(statement):
            assert "*" not in action, f"wildcard action {action}"
            formats = _resource_formats(action)
            if "*" in resources:
                assert formats == ["*"], f"{action} on * although it can be narrowed to {formats}"
            else:
                assert set(formats) - {"*"}, f"{action} takes no resource ARN"
        for resource in resources:
            assert resource == "*" or resource.startswith(("arn:", "${")), resource


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cloudsplaining_finds_no_risky_permission(variant: str) -> None:
    for params in _wire(variant, "PutRolePolicy"):
        document = PolicyDocument(json.loads(params["PolicyDocument"]))
        assert document.allows_privilege_escalation == []
        assert document.permissions_management_without_constraints == []
        assert document.infrastructure_modification == []
        assert document.allows_data_exfiltration_actions == [] or document.allows_data_exfiltration_actions == [
            "secretsmanager:GetSecretValue"
        ], "only the one Redis URL secret may be read"
        # an ECR registry login is how ECS pulls a private image; AWS's own execution policy has it
        assert set(document.credentials_exposure) <= {"ecr:GetAuthorizationToken"}


def test_execution_role_reads_only_its_secret_and_writes_only_its_log_group() -> None:
    by_sid = {s["Sid"]: s for s in _statements("example stack")}
    assert by_sid["WriteOwnLogs"]["Resource"] == "${log-group.arn}:*"
    assert by_sid["ReadRedisUrl"]["Resource"] == "${redis-secret.arn}"
    assert by_sid["PullImage"]["Resource"] == "arn:aws:ecr:eu-west-1:123456789012:repository/emails"
    external = {s["Sid"]: s for s in _statements("worker only, existing cluster, external redis")}
    assert "PullImage" not in external and "EcrLogin" not in external, "ghcr.io needs no ECR permission"
    assert external["DecryptRedisUrl"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
    }


def test_roles_trust_only_ecs_tasks_of_this_account() -> None:
    for params in _wire("example stack", "CreateRole"):
        (statement,) = json.loads(params["AssumeRolePolicyDocument"])["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Condition"] == {
            "ArnLike": {"aws:SourceArn": "arn:aws:ecs:eu-west-1:${aws.account_id}:*"},
            "StringEquals": {"aws:SourceAccount": "${aws.account_id}"},
        }


def test_only_the_worker_task_role_has_a_permission_protecting_its_own_task() -> None:
    policies = {p["RoleName"]: json.loads(p["PolicyDocument"]) for p in _wire("example stack", "PutRolePolicy")}
    assert set(policies) == {"${execution-role.name}", "${dashboard-execution-role.name}", "${worker-task-role.name}"}
    assert policies["${worker-task-role.name}"]["Statement"] == [
        {
            "Sid": "ProtectOwnTaskFromScaleIn",
            "Effect": "Allow",
            "Action": "ecs:UpdateTaskProtection",
            "Resource": "arn:aws:ecs:eu-west-1:${aws.account_id}:task/emails/*",
        }
    ]
    existing = {
        p["RoleName"]: json.loads(p["PolicyDocument"])
        for p in _wire("worker only, existing cluster, external redis", "PutRolePolicy")
    }
    (statement,) = existing["${worker-task-role.name}"]["Statement"]
    assert statement["Resource"] == "arn:aws:ecs:eu-west-1:${aws.account_id}:task/platform/*"


def test_only_the_dashboard_execution_role_reads_the_dashboard_credentials() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:emails/dashboard-users-Q1w2E3"
    policies = {p["RoleName"]: p["PolicyDocument"] for p in _wire("example stack", "PutRolePolicy")}
    assert arn not in policies["${execution-role.name}"]
    statements = {s["Sid"]: s for s in json.loads(policies["${dashboard-execution-role.name}"])["Statement"]}
    assert statements["ReadDashboardCredentials"] == {
        "Sid": "ReadDashboardCredentials",
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": arn,
    }
    (dashboard,) = [t for t in _wire("example stack", "RegisterTaskDefinition") if t["family"] == "emails-dashboard"]
    assert dashboard["executionRoleArn"] == "${dashboard-execution-role.arn}"
    others = [t for t in _wire("example stack", "RegisterTaskDefinition") if t["family"] != "emails-dashboard"]
    assert {t["executionRoleArn"] for t in others} == {"${execution-role.arn}"}


def test_the_alarm_topic_key_policy_grants_cloudwatch_only_encryption_for_this_account() -> None:
    (key,) = _wire("example stack", "CreateKey")
    statements = {s["Sid"]: s for s in json.loads(key["Policy"])["Statement"]}
    assert statements["AccountAdministersTheKeyThroughIam"]["Principal"] == {
        "AWS": "arn:aws:iam::${aws.account_id}:root"
    }, "AWS's default key statement: the account's IAM decides who administers the key"
    publish = statements["CloudWatchAlarmsOfThisAccountPublish"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    for action in publish["Action"]:
        assert _resource_formats(action)  # real KMS actions (policy_sentry)
    assert publish["Condition"] == {"StringEquals": {"aws:SourceAccount": "${aws.account_id}"}}
    (topic,) = _wire("example stack", "CreateTopic")
    assert topic["Attributes"] == {"KmsMasterKeyId": "${alarm-topic-key.arn}"}
    assert _wire("example stack", "EnableKeyRotation") == [{"KeyId": "${alarm-topic-key.key_id}"}]


def test_china_and_govcloud_partitions() -> None:
    spec = ecs_spec(ecs__region="cn-north-1", image="123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/emails:1.4.2")
    documents = [r.wire().params for r in build.build_requests(spec) if r.operation in ("CreateRole", "PutRolePolicy")]
    text = json.dumps(documents)
    assert "arn:aws-cn:ecs:cn-north-1:" in text and "arn:aws-cn:ecr:cn-north-1:123456789012:repository/emails" in text
