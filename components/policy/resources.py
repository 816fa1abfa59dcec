"""Pulumi resources (type token, input properties) -> killsafe.lint objects.

Kubernetes inputs are the object itself (camelCase, as the API). AWS inputs use Pulumi's camelCase
property names: a task definition's `containerDefinitions` is a JSON string, tags a mapping. A
pulumi-command Command that installs a unit file (`install ... /dev/stdin .../x.service` with the
text on `stdin`, or a `cat > x.service <<EOF` here-document in `create`) is read as that unit.
Properties still unknown during a preview are simply absent: the rules then see less, never fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from killsafe.lint.model import (
    EcsService,
    Ingress,
    KubeObject,
    LintInputError,
    LintObject,
    RedisSettings,
    TaskDefinition,
)
from killsafe.lint.readers import read_unit
from killsafe.lint.redis import conf_settings

KUBERNETES_KINDS = frozenset(
    {
        "apps/v1:Deployment",
        "apps/v1:StatefulSet",
        "apps/v1:DaemonSet",
        "policy/v1:PodDisruptionBudget",
        "core/v1:Service",
        "core/v1:ConfigMap",
        "networking.k8s.io/v1:NetworkPolicy",
    }
)
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
PARAMETER_GROUP = "aws:elasticache/parameterGroup:ParameterGroup"
COMMANDS = frozenset({"command:remote:Command", "command:local:Command"})
UNIT_PATH = re.compile(r"[\w@.:-]+\.(?:service|target|socket|timer)\b")
HEREDOC = re.compile(r"cat\s*>\s*(?P<path>\S+)\s*<<-?\s*['\"]?(?P<tag>\w+)['\"]?\n(?P<body>.*?)\n(?P=tag)\b", re.DOTALL)


def objects(resource_type: str, props: Mapping[str, Any], urn: str = "") -> list[LintObject]:
    """The lint objects one resource holds (none for types the checklist has nothing to say about)."""
    where = urn or resource_type
    if resource_type.startswith("kubernetes:"):
        return list(_kubernetes(resource_type, props, where))
    if resource_type == TASK_DEFINITION:
        return list(_task_definition(props, where))
    if resource_type == SERVICE:
        return [_service(props, where)]
    if resource_type in (SECURITY_GROUP, SECURITY_GROUP_RULE, INGRESS_RULE):
        return list(_ingress(resource_type, props, where))
    if resource_type == PARAMETER_GROUP:
        values = {str(p.get("name")): str(p.get("value")) for p in _list(props.get("parameters"))}
        return [RedisSettings(where, f"ParameterGroup/{props.get('name', '?')}", "parameters", values)]
    if resource_type in COMMANDS:
        return list(_command_files(props, where))
    return []


def _list(value: object) -> list[Any]:
    """A list property, or nothing when it is absent or still unknown (a preview's computed value)."""
    return [v for v in value if isinstance(v, Mapping | str)] if isinstance(value, list) else []


def _kubernetes(resource_type: str, props: Mapping[str, Any], where: str) -> Iterator[LintObject]:
    token = resource_type.removeprefix("kubernetes:")
    if token not in KUBERNETES_KINDS:
        return
    group_version, kind = token.rsplit(":", 1)
    api = group_version.removeprefix("core/")
    yield KubeObject(where, {"apiVersion": api, "kind": kind, **dict(props)})


def _task_definition(props: Mapping[str, Any], where: str) -> Iterator[LintObject]:
    raw = props.get("containerDefinitions")
    try:
        containers = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return
    if not isinstance(containers, list):
        return
    body = {**dict(props), "containerDefinitions": containers}
    raw_tags = props.get("tags")
    tags = {str(k): str(v) for k, v in raw_tags.items()} if isinstance(raw_tags, Mapping) else {}
    yield TaskDefinition(where, body, tags)


def _service(props: Mapping[str, Any], where: str) -> LintObject:
    config = {
        k: props[p]
        for k, p in (
            ("minimumHealthyPercent", "deploymentMinimumHealthyPercent"),
            ("maximumPercent", "deploymentMaximumPercent"),
        )
        if p in props
    }
    return EcsService(where, {"serviceName": props.get("name", ""), "deploymentConfiguration": config})


def _ingress(resource_type: str, props: Mapping[str, Any], where: str) -> Iterator[LintObject]:
    if resource_type == SECURITY_GROUP:
        for i, rule in enumerate(_list(props.get("ingress"))):
            cidrs = (*_list(rule.get("cidrBlocks")), *_list(rule.get("ipv6CidrBlocks")))
            yield Ingress(
                where,
                f"SecurityGroup/{props.get('name', '?')}",
                f"ingress[{i}]",
                tuple(map(str, cidrs)),
                rule.get("fromPort"),
                rule.get("toPort"),
                str(rule.get("protocol", "tcp")),
            )
    elif resource_type == SECURITY_GROUP_RULE:
        if props.get("type") == "ingress":
            cidrs = (*_list(props.get("cidrBlocks")), *_list(props.get("ipv6CidrBlocks")))
            yield Ingress(
                where,
                "SecurityGroupRule",
                "cidrBlocks",
                tuple(map(str, cidrs)),
                props.get("fromPort"),
                props.get("toPort"),
                str(props.get("protocol", "tcp")),
            )
    else:
        cidrs = tuple(str(props[k]) for k in ("cidrIpv4", "cidrIpv6") if props.get(k))
        yield Ingress(
            where,
            "SecurityGroupIngressRule",
            "cidrIpv4",
            cidrs,
            props.get("fromPort"),
            props.get("toPort"),
            str(props.get("ipProtocol", "tcp")),
        )


def _command_files(props: Mapping[str, Any], where: str) -> Iterator[LintObject]:
    """Unit files (and a redis.conf) a Command writes, as far as its inputs show them."""
    create, stdin = str(props.get("create") or ""), props.get("stdin")
    files: list[tuple[str, str]] = [(m["path"], m["body"]) for m in HEREDOC.finditer(create)]
    target = UNIT_PATH.search(create) or re.search(r"\S*redis\S*\.conf\b", create)
    if isinstance(stdin, str) and target is not None:
        files.append((target.group(0), stdin))
    for path, text in files:
        name = PurePosixPath(path).name
        if UNIT_PATH.fullmatch(name) and "[" in text:
            try:
                yield read_unit(where, name, text)
            except LintInputError:
                continue
        elif name.endswith(".conf") and "redis" in name:
            yield RedisSettings(where, name, "", conf_settings(text))
