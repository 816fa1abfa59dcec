"""EcsWorkload under the mocked Pulumi engine: exact child inputs, names, parents, order, secrets, providers.

The engine is the only thing mocked; the component runs for real on the real builder output. Inputs are
the raw camelCase wire values the engine receives (numbers as doubles: `wire_json` turns them back).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from pulumi.runtime import rpc

from killsafe.ecs import build
from killsafe.ecs.component import TYPE_TOKEN, EcsWorkload, Fields, UnmappedFields, translation
from killsafe.ecs.requests import AwsRequest
from tests.ecs.harness import (
    MOCK_ACCOUNT,
    MOCK_TOKEN,
    RANDOM_PASSWORD_TYPE,
    VARIANTS,
    aws_children,
    child,
    ecs_spec,
    run_aws,
    stack_config,
)
from tests.kubernetes.test_component import canonical, wire_json

SPEC = stack_config().workload
TAGS = {"killsafe:workload": "emails", "killsafe:component": "worker", "managed-by": "killsafe"}


def _run(name: str = "emails", **kwargs: Any) -> Any:
    run = run_aws(lambda: EcsWorkload(name, SPEC, **kwargs))
    assert run.error is None, run.error
    return run


def test_worker_service_inputs_reach_the_engine_exactly() -> None:
    run = _run()
    service = child(run, "emails-worker-service")
    assert service.type == "aws:ecs/service:Service"
    assert canonical(wire_json(service.inputs)) == canonical(
        {
            "region": "eu-west-1",
            "cluster": "arn:mock:emails-cluster",
            "name": "emails-worker",
            "taskDefinition": "arn:mock:emails-worker-task-definition",
            "desiredCount": 2,
            "launchType": "FARGATE",
            "platformVersion": "1.4.0",
            "networkConfiguration": {
                "subnets": ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"],
                "securityGroups": ["emails-worker-sg-id"],
                "assignPublicIp": False,
            },
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "deploymentMaximumPercent": 200,
            "deploymentMinimumHealthyPercent": 100,
            "deploymentController": {"type": "ECS"},
            "schedulingStrategy": "REPLICA",
            "enableEcsManagedTags": True,
            "propagateTags": "SERVICE",
            "enableExecuteCommand": False,
            "tags": TAGS,
        }
    )


def test_worker_task_definition_carries_the_builder_containers_as_json() -> None:
    run = _run()
    task = child(run, "emails-worker-task-definition")
    inputs = wire_json(task.inputs)
    (request,) = [r for r in build.build_requests(SPEC) if r.key == "worker-task-definition"]
    (container,) = json.loads(inputs.pop("containerDefinitions"))
    expected = request.wire().params["containerDefinitions"][0]
    expected["secrets"] = [{"name": "REDIS_URL", "valueFrom": "arn:mock:emails-redis-secret:url::"}]
    assert container == expected
    assert container["stopTimeout"] == 105
    assert inputs == {
        "region": "eu-west-1",
        "family": "emails-worker",
        "taskRoleArn": "arn:mock:emails-worker-task-role",
        "executionRoleArn": "arn:mock:emails-execution-role",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "512",
        "memory": "1024",
        "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"},
        "volumes": [{"name": "tmp"}],
        "tags": TAGS,
    }


def test_the_auth_token_is_generated_once_and_secret_everywhere() -> None:
    run = _run()
    (password,) = run.monitor.of_type(RANDOM_PASSWORD_TYPE)
    assert password.name == "emails-redis-auth-token"
    assert wire_json(password.inputs) == {"length": 32, "special": False}, "fixed inputs: never regenerated"
    group = child(run, "emails-redis")
    assert rpc.is_rpc_secret(group.inputs["authToken"])
    assert rpc.unwrap_rpc_secret(group.inputs["authToken"]) == MOCK_TOKEN
    value = child(run, "emails-redis-secret-value")
    assert rpc.is_rpc_secret(value.inputs["secretString"])
    assert json.loads(rpc.unwrap_rpc_secret(value.inputs["secretString"])) == {
        "url": f"rediss://:{MOCK_TOKEN}@emails-redis.mock.cache.amazonaws.com:6379/0"
    }
    assert value.inputs["secretId"] == "arn:mock:emails-redis-secret"
    everything_else = [
        c for c in run.monitor.registrations if c.name not in ("emails-redis", "emails-redis-secret-value")
    ]
    assert MOCK_TOKEN not in json.dumps([c.inputs for c in everything_else], default=str)


def test_the_account_id_comes_from_the_caller_identity() -> None:
    run = _run()
    role = child(run, "emails-execution-role")
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": MOCK_ACCOUNT}
    assert "region" not in role.inputs, "IAM is global"


def test_children_are_named_after_their_keys_and_parented_to_the_component() -> None:
    run = _run("blue")
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    assert component.name == "blue"
    children = [r for r in run.monitor.registrations if r is not component]
    assert {r.parent for r in children} == {component.urn}
    assert all(r.name.startswith("blue-") for r in children)
    assert child(run, "blue-worker-service").inputs["name"] == "emails-worker", "AWS names keep the workload's"


LATER_TYPES = {
    "aws:kms/key:Key",
    "aws:sns/topic:Topic",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
    "aws:appautoscaling/target:Target",
    "aws:appautoscaling/policy:Policy",
}


def test_services_start_only_after_everything_their_tasks_use() -> None:
    run = _run()
    services = [c for c in aws_children(run) if c.type == "aws:ecs/service:Service"]
    setup = [c for c in aws_children(run) if c not in services and c.type not in LATER_TYPES]
    assert len(services) == 3 and len(setup) > 20
    for service in services:
        missing = {c.name for c in setup if c.urn not in service.dependencies}
        assert not missing, f"{service.name} may start before {missing}"


def test_component_outputs() -> None:
    run = _run()
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    outputs = wire_json(run.monitor.outputs[component.urn])
    assert outputs["cluster_arn"] == "arn:mock:emails-cluster"
    assert outputs["worker_service_name"] == "emails-worker"
    assert outputs["web_service_name"] == "emails-web"
    assert outputs["log_group_name"] == "/ecs/emails"
    assert outputs["redis_secret_arn"] == "arn:mock:emails-redis-secret"
    assert outputs["shutdown_budget"]["kill_deadline_seconds"] == 105
    assert outputs["shutdown_budget"]["web"]["kill_deadline_seconds"] == 20


@pytest.mark.parametrize("how", ["provider", "providers"])
def test_a_provider_given_to_the_component_reaches_every_aws_child(how: str) -> None:
    def program() -> None:
        provider = aws.Provider("platform", region="eu-west-1")
        opts = (
            pulumi.ResourceOptions(provider=provider)
            if how == "provider"
            else pulumi.ResourceOptions(providers=[provider])
        )
        EcsWorkload("emails", SPEC, opts)

    run = run_aws(program)
    assert run.error is None, run.error
    (provider,) = run.monitor.of_type("pulumi:providers:aws")
    children = aws_children(run)
    assert children
    assert {c.provider for c in children} == {f"{provider.urn}::platform-id"}


def test_opt_outs_create_nothing_of_theirs() -> None:
    spec = VARIANTS["worker only, existing cluster, external redis"]()
    run = run_aws(lambda: EcsWorkload("emails", spec))
    assert run.error is None, run.error
    types = {c.type for c in run.monitor.registrations}
    for absent in (
        "aws:ecs/cluster:Cluster",
        "aws:lb/targetGroup:TargetGroup",
        "aws:elasticache/replicationGroup:ReplicationGroup",
    ):
        assert absent not in types
    assert RANDOM_PASSWORD_TYPE not in types
    assert (
        child(run, "emails-worker-service").inputs["cluster"] == "arn:aws:ecs:eu-west-1:123456789012:cluster/platform"
    )
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    outputs = run.monitor.outputs[component.urn]
    assert outputs.get("web_service_name") is None
    assert outputs["redis_secret_arn"] == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:q-AbCdEf"


def test_an_invalid_spec_fails_before_anything_is_registered() -> None:
    spec = SPEC.model_copy(update={"ecs": SPEC.ecs.model_copy(update={"region": None})})
    run = run_aws(lambda: EcsWorkload("emails", spec))
    assert run.error is not None
    assert "EcsWorkload('emails'): killsafe:workload.ecs.region: is required with target ecs" in str(run.error)
    assert [r.type for r in run.monitor.registrations] == [TYPE_TOKEN]


def test_a_field_no_translation_knows_fails_loudly() -> None:
    (request,) = [r for r in build.build_requests(SPEC) if r.key == "worker-service"]
    request = AwsRequest(
        request.key, request.service, request.operation, {**request.params, "capacityProviderStrategy": []}
    )
    fields = Fields("ecs.CreateService worker-service", request.params, lambda v: v)
    translation(request).translate(fields, [])
    with pytest.raises(
        UnmappedFields, match=r"worker-service: field\(s\) capacityProviderStrategy have no pulumi-aws input"
    ):
        fields.done()
    nested = Fields("x", {"networkConfiguration": {"awsvpcConfiguration": {"subnets": [], "bogus": 1}}}, lambda v: v)
    nested.sub("networkConfiguration").sub("awsvpcConfiguration")("subnets")
    with pytest.raises(UnmappedFields, match=r"x\.networkConfiguration\.awsvpcConfiguration: field\(s\) bogus"):
        nested.done()


def test_an_unknown_operation_fails_loudly() -> None:
    with pytest.raises(ValueError, match=r"no pulumi-aws resource for events.PutRule \(request 'rule'\)"):
        translation(AwsRequest("rule", "events", "PutRule", {}))


def test_alarms_and_scaling_come_after_the_services_in_order() -> None:
    """Stages: alarms after the services, the scalable target after them, its policy after the target."""
    run = _run()
    by_name = {c.name: c for c in aws_children(run)}
    target = by_name["emails-worker-scalable-target"]
    policy = by_name["emails-worker-scaling-policy"]
    assert by_name["emails-worker-service"].urn in target.dependencies
    assert target.urn in policy.dependencies
    alarm = by_name["emails-alarm-emails-workerdown"]
    assert by_name["emails-worker-service"].urn in alarm.dependencies
    assert by_name["emails-alarm-topic"].urn not in by_name["emails-worker-service"].dependencies


def test_autoscaled_worker_service_keeps_the_count_the_autoscaler_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `pulumi up` must not reset desiredCount: Pulumi ignores changes to it once autoscaling owns it."""
    seen: dict[str, Any] = {}
    original = aws.ecs.Service

    class Recorded(original):  # type: ignore[misc, valid-type]
        def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None, **kwargs: Any) -> None:
            seen[resource_name] = opts.ignore_changes if opts is not None else None
            super().__init__(resource_name, opts=opts, **kwargs)

    monkeypatch.setattr(aws.ecs, "Service", Recorded)
    run = run_aws(lambda: EcsWorkload("emails", SPEC))
    assert run.error is None
    assert seen["emails-worker-service"] == ["desiredCount"]
    assert seen["emails-web-service"] is None and seen["emails-dashboard-service"] is None
    fixed = ecs_spec(worker__autoscaling=None, worker__replicas=3)
    seen.clear()
    assert run_aws(lambda: EcsWorkload("emails", fixed)).error is None
    assert seen["emails-worker-service"] is None
