"""Every request the ECS builder makes passes botocore's service models, plus the limits botocore lacks.

botocore (pinned through uv.lock; 1.35.99 at the time of writing) carries the ECS, EC2, IAM, Logs,
ElastiCache, ELBv2 and Secrets Manager models; `model_problems` adds enum and max checks to its
ParamValidator. What the models do not encode at all (ECS health check ranges, the stopTimeout cap,
Fargate sizes, CloudWatch retention values, target group and replication group name rules) is
checked explicitly here, against values written from AWS's documentation, not from killsafe's code.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from killsafe.budget import shutdown_budget, web_budget
from killsafe.ecs import build
from killsafe.ecs.requests import ACCOUNT, AwsRequest, refs
from killsafe.spec import WorkloadSpec
from tests.ecs.botocore_models import model_problems
from tests.ecs.harness import VARIANTS, ecs_spec

# From AWS documentation (ECS HealthCheck, ContainerDefinition, CloudWatch Logs PutRetentionPolicy,
# Fargate task CPU and memory, ELBv2 CreateTargetGroup, ElastiCache CreateReplicationGroup).
ECS_HEALTH_RANGES = {"interval": (5, 300), "timeout": (2, 60), "retries": (1, 10), "startPeriod": (0, 300)}
FARGATE_STOP_TIMEOUT_MAX = 120
RETENTION_DAYS = {
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
}
FARGATE_MEMORY_GIB = {
    256: {0.5, 1, 2},
    512: set(range(1, 5)),
    1024: set(range(2, 9)),
    2048: set(range(4, 17)),
    4096: set(range(8, 31)),
    8192: set(range(16, 61, 4)),
    16384: set(range(32, 121, 8)),
}
TARGET_GROUP_NAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,32}(?<!-)$")
REPLICATION_GROUP_ID = re.compile(r"^[a-z](?!.*--)[a-z0-9-]{0,39}(?<!-)$")


def all_requests() -> list[tuple[str, AwsRequest]]:
    return [(variant, r.wire()) for variant, make in sorted(VARIANTS.items()) for r in build.build_requests(make())]


@pytest.mark.parametrize(("variant", "request_"), all_requests(), ids=lambda v: v if isinstance(v, str) else v.key)
def test_request_passes_the_botocore_model(variant: str, request_: AwsRequest) -> None:
    assert model_problems(request_.service, request_.operation, request_.params) == []


def test_the_checker_catches_what_plain_paramvalidator_misses() -> None:
    params = {"family": "x", "networkMode": "bogus", "containerDefinitions": [{"name": "a"}]}
    assert model_problems("ecs", "RegisterTaskDefinition", params) == [
        "RegisterTaskDefinition.networkMode: 'bogus' is not one of ['bridge', 'host', 'awsvpc', 'none']"
    ]
    too_often = {"Name": "x", "HealthCheckIntervalSeconds": 301}
    assert "above the model's max 300" in model_problems("elbv2", "CreateTargetGroup", too_often)[0]
    assert "Missing required parameter" in model_problems("ecs", "CreateService", {})[0]


def _of(spec: WorkloadSpec, operation: str) -> list[dict[str, Any]]:
    return [r.wire().params for r in build.build_requests(spec) if r.operation == operation]


def _container(spec: WorkloadSpec, tier: str) -> dict[str, Any]:
    (task,) = [t for t in _of(spec, "RegisterTaskDefinition") if t["family"].endswith(f"-{tier}")]
    (container,) = task["containerDefinitions"]
    return dict(container)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_what_botocore_does_not_check(variant: str) -> None:
    spec = VARIANTS[variant]()
    for task in _of(spec, "RegisterTaskDefinition"):
        assert int(task["memory"]) / 1024 in FARGATE_MEMORY_GIB[int(task["cpu"])], (task["cpu"], task["memory"])
        for container in task["containerDefinitions"]:
            assert 2 <= container["stopTimeout"] <= FARGATE_STOP_TIMEOUT_MAX
            assert container["memory"] <= int(task["memory"]) and container["cpu"] <= int(task["cpu"])
            check = container["healthCheck"]
            for name, (low, high) in ECS_HEALTH_RANGES.items():
                assert low <= check[name] <= high, (name, check[name])
            assert check["timeout"] < check["interval"]
    for retention in _of(spec, "PutRetentionPolicy"):
        assert retention["retentionInDays"] in RETENTION_DAYS
    for group in _of(spec, "CreateTargetGroup"):
        assert TARGET_GROUP_NAME.match(group["Name"])
        assert group["HealthCheckTimeoutSeconds"] < group["HealthCheckIntervalSeconds"]
    for attributes in _of(spec, "ModifyTargetGroupAttributes"):
        (delay,) = attributes["Attributes"]
        assert 0 <= int(delay["Value"]) <= 3600
    for group in _of(spec, "CreateReplicationGroup"):
        assert REPLICATION_GROUP_ID.match(group["ReplicationGroupId"])
        assert 1 <= group["NumCacheClusters"] <= 6
        assert group["AutomaticFailoverEnabled"] == group["MultiAZEnabled"] == (group["NumCacheClusters"] > 1)
    for role in _of(spec, "CreateRole"):
        assert len(role["RoleName"]) <= 64


def test_worker_stop_timeout_is_the_kill_deadline_and_web_gets_its_grace() -> None:
    spec = ecs_spec()
    worker = _container(spec, "worker")
    assert worker["stopTimeout"] == shutdown_budget(spec.worker).kill_deadline_seconds == 90 + 15
    env = {e["name"]: e["value"] for e in worker["environment"]}
    assert env["KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS"] == "100"
    assert spec.web is not None
    assert _container(spec, "web")["stopTimeout"] == web_budget(spec.web).kill_deadline_seconds == 20


def test_stop_timeout_is_set_even_when_it_equals_fargates_default() -> None:
    spec = ecs_spec(worker__max_job_seconds=25, worker__drain_margin_seconds=5)
    assert _container(spec, "worker")["stopTimeout"] == 30


@pytest.mark.parametrize(
    ("stall", "interval"), [(None, 10), (30, 10), (299, 10), (600, 20), (3000, 100), (9000, 300), (86_400, 300)]
)
def test_health_check_interval_follows_the_stall_window(stall: int | None, interval: int) -> None:
    changes = {"worker__max_job_seconds": 20, "worker__liveness_stall_seconds": stall} if stall else {}
    spec = ecs_spec(**changes)
    check = _container(spec, "worker")["healthCheck"]
    assert check == {
        "command": ["CMD", "killsafe-worker", "healthcheck", "--probe", "live", "--timeout", "3"],
        "interval": interval,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 45,
    }
    budget = shutdown_budget(spec.worker)
    assert check["interval"] * check["retries"] <= max(30, budget.liveness_stall_seconds // 10)


def test_web_health_check_probes_the_web_port() -> None:
    web = _container(ecs_spec(), "web")
    env = {e["name"]: e["value"] for e in web["environment"]}
    assert env["KILLSAFE_HEALTH_PORT"] == "8000" == str(web["portMappings"][0]["containerPort"])
    assert web["healthCheck"]["command"][:5] == ["CMD", "killsafe-worker", "healthcheck", "--probe", "live"]


def test_every_ref_points_at_an_earlier_request_or_a_known_value() -> None:
    for make in VARIANTS.values():
        seen: set[str] = set(build.GENERATED) | {ACCOUNT}
        for request in build.build_requests(make()):
            for ref in refs(request.params):
                assert ref.key in seen, f"{request.key} refers to {ref.text()} before it exists"
            assert request.amends is None or request.amends in seen
            seen.add(request.key)


def test_build_is_deterministic_and_keys_are_unique() -> None:
    first = [r.wire() for r in build.build_requests(ecs_spec())]
    assert first == [r.wire() for r in build.build_requests(ecs_spec())]
    assert len({r.key for r in first}) == len(first)


def test_secrets_never_appear_in_environment_or_in_the_rendered_requests() -> None:
    for make in VARIANTS.values():
        spec = make()
        for task in _of(spec, "RegisterTaskDefinition"):
            (container,) = task["containerDefinitions"]
            names = {e["name"] for e in container["environment"]}
            assert not names & {"REDIS_URL", "REDIS_URL_FILE", "KILLSAFE_DASHBOARD_CREDENTIALS"}
            secret, *others = container["secrets"]
            assert secret["name"] == "REDIS_URL"
            assert secret["valueFrom"].endswith(":url::")
            if task["family"].endswith("-dashboard"):
                assert others == [
                    {
                        "name": "KILLSAFE_DASHBOARD_CREDENTIALS",
                        "valueFrom": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:"
                        "emails/dashboard-users-Q1w2E3:credentials::",
                    }
                ]
            else:
                assert others == []
    (group,) = _of(ecs_spec(), "CreateReplicationGroup")
    assert group["AuthToken"] == "${redis-auth-token.result}"
    (value,) = _of(ecs_spec(), "PutSecretValue")
    assert json.loads(value["SecretString"]) == {
        "url": "rediss://:${redis-auth-token.result}@${redis.primary_endpoint_address}:6379/0"
    }


def test_external_redis_reads_the_given_secret_and_key() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:emails-redis-AbCdEf"
    spec = ecs_spec(redis={"mode": "external", "url_secret": {"name": arn, "key": "primary"}})
    assert _container(spec, "worker")["secrets"] == [{"name": "REDIS_URL", "valueFrom": f"{arn}:primary::"}]
    assert not _of(spec, "CreateReplicationGroup") and not _of(spec, "CreateSecret")
    egress = _of(spec, "AuthorizeSecurityGroupEgress")
    assert {(e["IpPermissions"][0]["FromPort"], e["GroupId"]) for e in egress} >= {
        (6379, "${worker-sg.id}"),
        (6379, "${web-sg.id}"),
    }


def test_elasticache_is_configured_for_queues() -> None:
    spec = ecs_spec()
    (values,) = _of(spec, "ModifyCacheParameterGroup")
    assert values["ParameterNameValues"] == [{"ParameterName": "maxmemory-policy", "ParameterValue": "noeviction"}]
    (group,) = _of(spec, "CreateReplicationGroup")
    assert group["CacheParameterGroupName"] == values["CacheParameterGroupName"]
    assert group["TransitEncryptionEnabled"] is group["AtRestEncryptionEnabled"] is True
    assert group["ClusterMode"] == "disabled" and group["NumCacheClusters"] == 2
    assert group["SecurityGroupIds"] == ["${redis-sg.id}"]
    (create,) = _of(spec, "CreateCacheParameterGroup")
    assert create["CacheParameterGroupFamily"] == "redis7"


def test_services_never_drop_capacity_and_roll_back_bad_deploys() -> None:
    for service in _of(ecs_spec(), "CreateService"):
        assert service["deploymentConfiguration"] == {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        }
        assert service["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"
        assert service["platformVersion"] == "1.4.0"
        assert service["enableExecuteCommand"] is False


def test_web_is_deregistered_before_sigterm_for_less_than_its_grace() -> None:
    spec = ecs_spec()
    assert spec.web is not None
    (attributes,) = _of(spec, "ModifyTargetGroupAttributes")
    assert attributes["Attributes"] == [{"Key": "deregistration_delay.timeout_seconds", "Value": "15"}]
    assert 15 == spec.web.prestop_seconds + spec.web.max_request_seconds < web_budget(spec.web).kill_deadline_seconds
    (group,) = _of(spec, "CreateTargetGroup")
    assert group["HealthCheckPath"] == "/livez" and group["TargetType"] == "ip"
    (web,) = [s for s in _of(spec, "CreateService") if s["serviceName"] == "emails-web"]
    assert web["loadBalancers"] == [
        {"targetGroupArn": "${web-target-group.arn}", "containerName": "web", "containerPort": 8000}
    ]
    assert web["healthCheckGracePeriodSeconds"] == 45
    (worker,) = [s for s in _of(spec, "CreateService") if s["serviceName"] == "emails-worker"]
    assert "loadBalancers" not in worker


def test_long_names_fit_aws_limits_and_stay_unique() -> None:
    long = "a" * 36 + "-b12"  # 40 characters, the spec's maximum
    spec = ecs_spec(name=long)
    (group,) = _of(spec, "CreateTargetGroup")
    assert len(group["Name"]) == 32 and TARGET_GROUP_NAME.match(group["Name"])
    (rg,) = _of(spec, "CreateReplicationGroup")
    assert len(rg["ReplicationGroupId"]) == 40 and REPLICATION_GROUP_ID.match(rg["ReplicationGroupId"])
    other = ecs_spec(name="a" * 36 + "-b13")
    assert _of(other, "CreateTargetGroup")[0]["Name"] != group["Name"]
    digit = ecs_spec(name="9lives")
    assert REPLICATION_GROUP_ID.match(_of(digit, "CreateReplicationGroup")[0]["ReplicationGroupId"])


def test_json_lines_stay_one_log_event_each() -> None:
    spec = ecs_spec()
    for tier in ("web", "worker"):
        assert _container(spec, tier)["logConfiguration"] == {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": "/ecs/emails",
                "awslogs-region": "eu-west-1",
                "awslogs-stream-prefix": tier,
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        }, "no awslogs-multiline-pattern or awslogs-datetime-format: they would join lines"
    (retention,) = _of(spec, "PutRetentionPolicy")
    assert retention == {"logGroupName": "/ecs/emails", "retentionInDays": 30}


def test_the_web_metrics_listener_is_off_on_ecs() -> None:
    """Nothing scrapes Prometheus metrics on ECS and no security group opens the port: the web app
    must not listen on it (KILLSAFE_WEB_METRICS_PORT 0), nor map it."""
    web = _container(ecs_spec(), "web")
    env = {e["name"]: e["value"] for e in web["environment"]}
    assert env["KILLSAFE_WEB_METRICS_PORT"] == "0"
    assert [m["containerPort"] for m in web["portMappings"]] == [8000]
