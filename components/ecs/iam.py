"""Least-privilege IAM: one execution role for ECS itself, one task role per tier for the app's code.

The execution role may write to the workload's own log group, read the one secret holding the Redis
URL (and decrypt it with its KMS key, through Secrets Manager only), and pull the image when it is in
ECR. `ecr:GetAuthorizationToken` is the only action on `*`: it has no resource type to narrow to.
Both roles trust `ecs-tasks.amazonaws.com` only for tasks of this account and region (the
confused-deputy conditions AWS documents for ECS).

The worker's task role may call `ecs:UpdateTaskProtection` on this cluster's tasks (its scale-in
protection, through the ECS agent's endpoint: the worker only ever sets it, never reads it); the web
and dashboard task roles have no permissions (metrics go out as log lines). The dashboard has its own
execution role, the only one that can read the dashboard's credentials secret.
"""

from __future__ import annotations

import re
from typing import Any

from killsafe.ecs import names
from killsafe.ecs.names import Tier
from killsafe.ecs.requests import ACCOUNT, AwsRequest, Json, Ref, Sub
from killsafe.spec import WorkloadSpec

POLICY_VERSION = "2012-10-17"
TASKS_PRINCIPAL = "ecs-tasks.amazonaws.com"
ECR_IMAGE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*?)(?::[^/@]+)?(?:@sha256:[0-9a-f]{64})?$"
)
ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]

EXECUTION_ROLE = "execution-role"
DASHBOARD_EXECUTION_ROLE = "dashboard-execution-role"
EXECUTION_POLICY_NAME = "killsafe-execution"
TASK_POLICY_NAME = "killsafe-task"


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def region_of(spec: WorkloadSpec) -> str:
    if spec.ecs.region is None:  # StackConfig requires it for target ecs
        raise ValueError("workload.ecs.region is required on target ecs")
    return spec.ecs.region


def task_role_key(tier: Tier) -> str:
    return f"{tier}-task-role"


def trust_policy(spec: WorkloadSpec) -> dict[str, Any]:
    region = region_of(spec)
    account = Ref(ACCOUNT, "account_id")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": TASKS_PRINCIPAL},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "ArnLike": {"aws:SourceArn": Sub(f"arn:{partition(region)}:ecs:{region}:", account, ":*")},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            }
        ],
    }


def execution_statements(spec: WorkloadSpec, log_group_arn: Ref, redis_secret_arn: str | Ref) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = [
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": Sub(log_group_arn, ":*"),
        },
        {
            "Sid": "ReadRedisUrl",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": redis_secret_arn,
        },
    ]
    if spec.ecs.secrets_kms_key_arn is not None:
        statements.append(
            {
                "Sid": "DecryptRedisUrl",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": spec.ecs.secrets_kms_key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region_of(spec)}.amazonaws.com"}},
            }
        )
    ecr = ECR_IMAGE.match(spec.image)
    if ecr is not None:
        region = ecr["region"]
        repository_arn = f"arn:{partition(region)}:ecr:{region}:{ecr['account']}:repository/{ecr['repository']}"
        statements += [
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PullImage", "Effect": "Allow", "Action": ECR_PULL_ACTIONS, "Resource": repository_arn},
        ]
    return statements


def cluster_name(spec: WorkloadSpec) -> str:
    """The created cluster's name, or the last part of `ecs.cluster_arn` (arn:...:cluster/<name>)."""
    if spec.ecs.cluster_arn is None:
        return names.cluster_name(spec)
    return spec.ecs.cluster_arn.rsplit("/", 1)[-1]


def task_role_statements(spec: WorkloadSpec, tier: Tier) -> list[dict[str, Any]]:
    """What the tier's own code may do on AWS: the worker protects its own task from scale-in (the ECS
    agent's endpoint calls UpdateTaskProtection with the task role), on this cluster's tasks only.
    Web and dashboard need nothing (metrics leave as log lines)."""
    if tier != "worker":
        return []
    region = region_of(spec)
    tasks = Sub(f"arn:{partition(region)}:ecs:{region}:", Ref(ACCOUNT, "account_id"), f":task/{cluster_name(spec)}/*")
    return [
        {"Sid": "ProtectOwnTaskFromScaleIn", "Effect": "Allow", "Action": "ecs:UpdateTaskProtection", "Resource": tasks}
    ]


def _role(spec: WorkloadSpec, key: str, role_name: str, description: str, component: str) -> AwsRequest:
    return AwsRequest(
        key,
        "iam",
        "CreateRole",
        {
            "RoleName": role_name,
            "AssumeRolePolicyDocument": Json(trust_policy(spec)),
            "Description": description,
            "MaxSessionDuration": 3600,
            "Tags": names.key_value_tags(spec, component),
        },
    )


def _policy(key: str, role_key: str, policy_name: str, statements: list[dict[str, Any]]) -> AwsRequest:
    return AwsRequest(
        key,
        "iam",
        "PutRolePolicy",
        {
            "RoleName": Ref(role_key, "name"),
            "PolicyName": policy_name,
            "PolicyDocument": Json({"Version": POLICY_VERSION, "Statement": statements}),
        },
    )


def dashboard_execution_statements(
    spec: WorkloadSpec, log_group_arn: Ref, redis_secret_arn: str | Ref, credentials_arn: str | None
) -> list[dict[str, Any]]:
    """The execution role's statements, plus reading the dashboard's one credentials secret."""
    statements = execution_statements(spec, log_group_arn, redis_secret_arn)
    if credentials_arn is not None:
        statements.append(
            {
                "Sid": "ReadDashboardCredentials",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": credentials_arn,
            }
        )
    return statements


def iam_requests(
    spec: WorkloadSpec, log_group_arn: Ref, redis_secret_arn: str | Ref, dashboard_credentials_arn: str | None = None
) -> list[AwsRequest]:
    requests = [
        _role(
            spec,
            EXECUTION_ROLE,
            names.execution_role_name(spec),
            f"ECS pulls the image, writes logs and reads the Redis URL of {spec.name} (killsafe)",
            "ecs",
        ),
        _policy(
            f"{EXECUTION_ROLE}-policy",
            EXECUTION_ROLE,
            EXECUTION_POLICY_NAME,
            execution_statements(spec, log_group_arn, redis_secret_arn),
        ),
    ]
    tiers: list[Tier] = ["web", "worker"] if spec.web is not None else ["worker"]
    if spec.dashboard.enabled:
        tiers.append("dashboard")
        requests += [
            _role(
                spec,
                DASHBOARD_EXECUTION_ROLE,
                names.dashboard_execution_role_name(spec),
                f"ECS pulls the image, writes logs, reads the Redis URL and dashboard users of {spec.name} (killsafe)",
                "dashboard",
            ),
            _policy(
                f"{DASHBOARD_EXECUTION_ROLE}-policy",
                DASHBOARD_EXECUTION_ROLE,
                EXECUTION_POLICY_NAME,
                dashboard_execution_statements(spec, log_group_arn, redis_secret_arn, dashboard_credentials_arn),
            ),
        ]
    for tier in tiers:
        key = task_role_key(tier)
        requests.append(
            _role(spec, key, names.task_role_name(spec, tier), f"The {tier} tasks' own AWS access (killsafe)", tier)
        )
        statements = task_role_statements(spec, tier)
        if statements:
            requests.append(_policy(f"{key}-policy", key, TASK_POLICY_NAME, statements))
    return requests
