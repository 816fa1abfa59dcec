"""The checklist rules (killsafe.checks.RULE_TITLES) over ECS requests.

They read the requests in wire form (refs as `${key.attribute}` text), so they work on the builder's
output and on rendered files edited by hand. KS009 (voluntary disruptions) has no ECS object of its
own: Fargate task retirement follows the service's deployment limits, which KS008 checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.checks import Finding, RuleSet
from killsafe.ecs import health
from killsafe.ecs.fargate import is_valid_size
from killsafe.ecs.requests import AwsRequest
from killsafe.spec import FARGATE_MAX_STOP_TIMEOUT_SECONDS, WorkloadSpec

RULES = RuleSet("ecs")
OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")


def check_ecs(spec: WorkloadSpec, requests: list[AwsRequest]) -> list[Finding]:
    return RULES.run(spec, requests)


def _of(requests: list[AwsRequest], operation: str) -> list[AwsRequest]:
    return [r for r in requests if r.operation == operation]


def _ref(request: AwsRequest) -> str:
    return f"{request.operation}/{request.key}"


def _task_definitions(requests: list[AwsRequest], container: str) -> list[AwsRequest]:
    """Task definitions whose containers include one named `container` ("web" or "worker")."""
    return [
        r for r in _of(requests, "RegisterTaskDefinition") if any(c.get("name") == container for c in _containers(r))
    ]


def _containers(request: AwsRequest) -> list[dict[str, Any]]:
    return list(request.params.get("containerDefinitions") or [])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e.get("name", ""): str(e.get("value", "")) for e in container.get("environment") or []}


def _services(requests: list[AwsRequest], tier: str) -> list[AwsRequest]:
    return [r for r in _of(requests, "CreateService") if str(r.params.get("serviceName", "")).endswith(f"-{tier}")]


def _json(text: object) -> Any:
    try:
        return json.loads(str(text))
    except ValueError:
        return None


@RULES.rule("KS001")
def _stop_timeout(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    budget = shutdown_budget(spec.worker)
    workers = _task_definitions(requests, "worker")
    if not workers:
        yield Finding("KS001", "RegisterTaskDefinition/?", "no task definition with a container named worker")
    for task in workers:
        for c in (c for c in _containers(task) if c.get("name") == "worker"):
            stop = c.get("stopTimeout")
            if not isinstance(stop, int):
                yield Finding(
                    "KS001",
                    _ref(task),
                    f"container {c.get('name')} sets no stopTimeout: Fargate's 30 s default applies",
                )
                continue
            if stop < budget.kill_deadline_seconds:
                yield Finding(
                    "KS001",
                    _ref(task),
                    f"stopTimeout {stop} is shorter than max_job_seconds ({budget.max_job_seconds}) + "
                    f"drain_margin_seconds ({budget.drain_margin_seconds}) = {budget.kill_deadline_seconds}: "
                    "jobs would be killed mid-way on every deploy",
                )
            if stop > FARGATE_MAX_STOP_TIMEOUT_SECONDS:
                yield Finding(
                    "KS001",
                    _ref(task),
                    f"stopTimeout {stop} exceeds Fargate's {FARGATE_MAX_STOP_TIMEOUT_SECONDS} s cap",
                )
            raw = _env(c).get(contract.ENV_SHUTDOWN_TIMEOUT_SECONDS, "")
            if not raw.isdigit() or not budget.max_job_seconds <= int(raw) < stop:
                yield Finding(
                    "KS001",
                    _ref(task),
                    f"{contract.ENV_SHUTDOWN_TIMEOUT_SECONDS}={raw or '(unset)'} must be >= max_job_seconds "
                    f"({budget.max_job_seconds}) and < stopTimeout ({stop})",
                )


@RULES.rule("KS002")
def _health(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    for task in _of(requests, "RegisterTaskDefinition"):
        for c in _containers(task):
            check = c.get("healthCheck")
            if not isinstance(check, dict):
                yield Finding("KS002", _ref(task), f"container {c.get('name')} has no healthCheck")
                continue
            if list(check.get("command") or []) != list(health.HEALTH_COMMAND):
                yield Finding(
                    "KS002",
                    _ref(task),
                    f"container {c.get('name')} healthCheck must run {' '.join(health.HEALTH_COMMAND[1:])} "
                    "(liveness: a readiness check would restart every task during a Redis outage), "
                    f"not {check.get('command')}",
                )
            for name in health.HEALTH_CHECK_RANGES:
                if name in check and not health.in_range(name, check[name]):
                    low, high = health.HEALTH_CHECK_RANGES[name]
                    yield Finding(
                        "KS002", _ref(task), f"healthCheck {name} {check[name]} is outside ECS's {low}-{high}"
                    )
    for group in _of(requests, "CreateTargetGroup"):
        if (
            group.params.get("HealthCheckEnabled") is not True
            or group.params.get("HealthCheckPath") != contract.LIVE_PATH
        ):
            yield Finding(
                "KS002",
                _ref(group),
                f"the target group must health-check {contract.LIVE_PATH} "
                "(ECS replaces tasks the ALB reports unhealthy)",
            )


@RULES.rule("KS003")
def _resources(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    for task in _of(requests, "RegisterTaskDefinition"):
        cpu, memory = str(task.params.get("cpu", "")), str(task.params.get("memory", ""))
        if not (cpu.isdigit() and memory.isdigit() and is_valid_size(int(cpu), int(memory))):
            yield Finding(
                "KS003", _ref(task), f"task cpu {cpu or '(unset)'} / memory {memory or '(unset)'} is not a Fargate size"
            )
            continue
        for c in _containers(task):
            for field in ("cpu", "memory", "memoryReservation"):
                if not isinstance(c.get(field), int):
                    yield Finding("KS003", _ref(task), f"container {c.get('name')} sets no {field}")
            if isinstance(c.get("memory"), int) and c["memory"] > int(memory):
                yield Finding(
                    "KS003", _ref(task), f"container {c.get('name')} memory {c['memory']} exceeds the task's {memory}"
                )


@RULES.rule("KS004")
def _split(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    workers, webs = _services(requests, "worker"), _services(requests, "web")
    if not workers:
        yield Finding("KS004", "CreateService/?", "no worker service")
    if spec.web is not None and not webs:
        yield Finding("KS004", "CreateService/?", "the spec has a web tier but there is no web service")
    for task in _of(requests, "RegisterTaskDefinition"):
        tiers = {c.get("name") for c in _containers(task)}
        if {"web", "worker"} <= tiers:
            yield Finding("KS004", _ref(task), "one task definition runs both web and worker")
        if "worker" in tiers and any(c.get("portMappings") for c in _containers(task)):
            yield Finding("KS004", _ref(task), "the worker container maps ports: workers take no traffic")
    for service in workers:
        if service.params.get("loadBalancers") or service.params.get("serviceRegistries"):
            yield Finding("KS004", _ref(service), "routes traffic to workers: workers take no traffic")
        if service.params.get("taskDefinition") in {s.params.get("taskDefinition") for s in webs}:
            yield Finding("KS004", _ref(service), "runs the web tier's task definition")
    yield from _dashboard_exposure(requests, webs)


def _dashboard_exposure(requests: list[AwsRequest], webs: list[AwsRequest]) -> Iterator[Finding]:
    """The dashboard is internal: never in the ALB's target group, never behind the web tier's security group."""
    web_groups = {str(g) for s in webs for g in _security_groups(s)}
    web_tasks = {str(s.params.get("taskDefinition")) for s in webs}
    for service in _services(requests, "dashboard"):
        if service.params.get("loadBalancers"):
            yield Finding(
                "KS004", _ref(service), "puts the dashboard behind a load balancer: the ALB is the public web entry"
            )
        if str(service.params.get("taskDefinition")) in web_tasks:
            yield Finding("KS004", _ref(service), "runs the web tier's task definition: the web port would serve it")
        shared = sorted(web_groups & {str(g) for g in _security_groups(service)})
        if shared:
            yield Finding(
                "KS004",
                _ref(service),
                f"shares the web tier's security group {', '.join(shared)}: whatever reaches the web reaches the "
                "dashboard; give it its own group",
            )


def _security_groups(service: AwsRequest) -> list[object]:
    config = service.params.get("networkConfiguration") or {}
    return list((config.get("awsvpcConfiguration") or {}).get("securityGroups") or [])


@RULES.rule("KS005")
def _hardened(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    for task in _of(requests, "RegisterTaskDefinition"):
        for c in _containers(task):
            problems = []
            uid = str(c.get("user", "")).split(":", maxsplit=1)[0]
            if not uid.isdigit() or int(uid) == 0:
                problems.append("user is not a numeric non-root UID")
            if c.get("readonlyRootFilesystem") is not True:
                problems.append("root filesystem is writable")
            if c.get("privileged"):
                problems.append("privileged")
            if "ALL" not in (((c.get("linuxParameters") or {}).get("capabilities") or {}).get("drop") or []):
                problems.append("capabilities are not dropped (drop: [ALL])")
            if problems:
                yield Finding("KS005", _ref(task), f"container {c.get('name')}: {'; '.join(problems)}")
    for service in _of(requests, "CreateService"):
        vpc = (service.params.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
        if vpc.get("assignPublicIp") != "DISABLED":
            yield Finding("KS005", _ref(service), "tasks get a public IP; set assignPublicIp DISABLED")
        if service.params.get("enableExecuteCommand"):
            yield Finding("KS005", _ref(service), "ECS Exec is on: anyone with ecs:ExecuteCommand gets a shell")
    for rule in _of(requests, "AuthorizeSecurityGroupIngress"):
        for permission in rule.params.get("IpPermissions") or []:
            cidrs = [r.get("CidrIp") for r in permission.get("IpRanges") or []]
            cidrs += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges") or []]
            if OPEN_CIDRS & set(cidrs):
                yield Finding("KS005", _ref(rule), f"admits ingress from {sorted(OPEN_CIDRS & set(cidrs))[0]}")
    for policy in _of(requests, "PutRolePolicy"):
        document = _json(policy.params.get("PolicyDocument")) or {}
        for statement in document.get("Statement") or []:
            actions = statement.get("Action")
            actions = [actions] if isinstance(actions, str) else list(actions or [])
            broad = [a for a in actions if a == "*" or str(a).endswith(":*")]
            if statement.get("Effect") == "Allow" and broad:
                yield Finding("KS005", _ref(policy), f"allows {broad[0]}: grant the actions the workload uses")


@RULES.rule("KS006")
def _secrets(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    for task in _of(requests, "RegisterTaskDefinition"):
        for c in _containers(task):
            env = _env(c)
            for name, value in env.items():
                upper = name.upper()
                if name in (contract.ENV_REDIS_URL, contract.ENV_REDIS_URL_FILE) or any(
                    w in upper for w in SECRET_WORDS
                ):
                    yield Finding(
                        "KS006", _ref(task), f"container {c.get('name')} sets {name} in environment: use secrets"
                    )
                elif "redis" in value and "://" in value and "@" in value:
                    yield Finding(
                        "KS006", _ref(task), f"container {c.get('name')} carries a Redis URL with credentials"
                    )
            if not any(s.get("name") == contract.ENV_REDIS_URL for s in c.get("secrets") or []):
                yield Finding(
                    "KS006", _ref(task), f"container {c.get('name')} does not get {contract.ENV_REDIS_URL} from secrets"
                )
    for request in [*_of(requests, "CreateReplicationGroup"), *_of(requests, "PutSecretValue")]:
        for name in ("AuthToken", "SecretString"):
            value = str(request.params.get(name, ""))
            if name in request.params and "${" not in value:
                yield Finding(
                    "KS006", _ref(request), f"{name} is written in plain text; it must be generated at deploy"
                )


@RULES.rule("KS007")
def _redis(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    if spec.redis.mode != "elasticache":
        return
    values = {
        p.get("ParameterName"): p.get("ParameterValue")
        for r in _of(requests, "ModifyCacheParameterGroup")
        for p in r.params.get("ParameterNameValues") or []
    }
    if values.get("maxmemory-policy") != "noeviction":
        yield Finding(
            "KS007", "ModifyCacheParameterGroup/?", "maxmemory-policy is not noeviction: queue keys could be evicted"
        )
    groups = {r.params.get("CacheParameterGroupName") for r in _of(requests, "ModifyCacheParameterGroup")}
    for group in _of(requests, "CreateReplicationGroup"):
        if group.params.get("CacheParameterGroupName") not in groups:
            yield Finding("KS007", _ref(group), "does not use the noeviction parameter group")
        if int(group.params.get("NumCacheClusters", 1)) < 2:
            yield Finding(
                "KS007",
                _ref(group),
                "has no replica and ElastiCache offers no AOF: a node failure loses the queue; "
                "set elasticache.replicas",
                level="warning",
            )


@RULES.rule("KS008")
def _rollout(spec: WorkloadSpec, requests: list[AwsRequest]) -> Iterator[Finding]:
    for service in _services(requests, "worker"):
        config = service.params.get("deploymentConfiguration") or {}
        if config.get("minimumHealthyPercent", 100) < 100 or config.get("maximumPercent", 200) <= 100:
            yield Finding(
                "KS008",
                _ref(service),
                "a deploy may stop workers before new ones are healthy; minimumHealthyPercent 100, maximumPercent 200",
            )
        breaker = config.get("deploymentCircuitBreaker") or {}
        if breaker.get("enable") is not True or breaker.get("rollback") is not True:
            yield Finding(
                "KS008", _ref(service), "no deployment circuit breaker with rollback: a bad deploy keeps failing"
            )
