"""Shared ECS test support: the example stack, specs made from it, the mocked AWS engine, botocore models.

The engine is the only thing mocked (`pulumi.runtime.set_mocks`, through the Kubernetes tests' recording
harness): resources come back with their inputs plus the outputs AWS would assign, made up from the
child's name so a test can predict them (`mock_value`): `arn:mock:<child>`, `<child>-id`, ...
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pulumi
import yaml

from killsafe.config import load_stack, parse_stack_config
from killsafe.ecs.requests import ACCOUNT, Ref
from killsafe.spec import StackConfig, WorkloadSpec
from tests.kubernetes.test_component import STACKS, Registration, Run, run_under_mocks

MOCK_ACCOUNT = "123456789012"
MOCK_TOKEN = "MockedAuthToken0123456789abcdefX"
RANDOM_PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"
CALLER_IDENTITY = "aws:index/getCallerIdentity:getCallerIdentity"


def stack_config(stack: str = "ecs") -> StackConfig:
    return load_stack(stack, STACKS)


def ecs_spec(**changes: Any) -> WorkloadSpec:
    """The example ECS stack's workload with top-level or dotted changes (`ecs.load_balancer=None`)."""
    raw = raw_workload()
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return parse_stack_config({"target": "ecs", "workload": raw}, "test").workload


def raw_workload() -> dict[str, Any]:
    document = yaml.safe_load((STACKS / "Pulumi.ecs.yaml").read_text())
    return copy.deepcopy(document["config"]["killsafe:workload"])


def mock_value(child: str, attribute: str, inputs: dict[str, Any]) -> str:
    """What the mocked engine returns as `attribute` of the child named `child` (inputs: its wire inputs)."""
    if attribute in inputs and isinstance(inputs[attribute], str):
        return inputs[attribute]
    made_up = {
        "arn": f"arn:mock:{child}",
        "id": f"{child}-id",
        "name": child,
        "primaryEndpointAddress": f"{child}.mock.cache.amazonaws.com",
        "result": MOCK_TOKEN,
        "keyId": f"{child}-key-id",
    }
    return made_up[attribute]


class AwsMocks(pulumi.runtime.Mocks):
    """Inputs echoed as state, plus the outputs AWS assigns; the caller identity of MOCK_ACCOUNT."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        for attribute in ("arn", "name", "primaryEndpointAddress", "result", "keyId"):
            state.setdefault(attribute, mock_value(args.name, attribute, state))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == CALLER_IDENTITY:
            arn = f"arn:aws:iam::{MOCK_ACCOUNT}:user/mock"
            return {"accountId": MOCK_ACCOUNT, "arn": arn, "id": MOCK_ACCOUNT, "userId": "MOCK"}
        raise AssertionError(f"unexpected provider function call {args.token}")


def run_aws(program: Any, **kwargs: Any) -> Run:
    return run_under_mocks(program, mocks=AwsMocks(), **kwargs)


def aws_children(run: Run) -> list[Registration]:
    return [r for r in run.monitor.registrations if r.type.startswith("aws:")]


def child(run: Run, name: str) -> Registration:
    found = [r for r in run.monitor.registrations if r.name == name and not r.type.startswith("killsafe:")]
    assert len(found) == 1, (name, [r.name for r in run.monitor.registrations])
    return found[0]


def snake_to_camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def ref_lookup(run: Run, component: str) -> Any:
    """Resolve a builder ref to the value the mocked engine gave that child."""

    def lookup(ref: Ref) -> str:
        if ref.key == ACCOUNT:
            return MOCK_ACCOUNT
        name = f"{component}-{ref.key}"
        return mock_value(name, snake_to_camel(ref.attribute), child(run, name).inputs)

    return lookup


VARIANTS: dict[str, Callable[[], WorkloadSpec]] = {
    "example stack": ecs_spec,
    "worker only, existing cluster, external redis": lambda: ecs_spec(
        web=None,
        ecs__load_balancer=None,
        ecs__cluster_arn="arn:aws:ecs:eu-west-1:123456789012:cluster/platform",
        redis={
            "mode": "external",
            "url_secret": {"name": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:q-AbCdEf"},
        },
        ecs__secrets_kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-1111-2222-3333-444455556666",
        image="ghcr.io/acme/emails:1.4.2",
    ),
    "web without a load balancer, no replicas": lambda: ecs_spec(
        ecs__load_balancer=None, ecs__elasticache={"replicas": 0}, ecs__container_insights=False
    ),
}
"""Spec shapes every request-level test runs over: all the opt-outs and both Redis modes."""
