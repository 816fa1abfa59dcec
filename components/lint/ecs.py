"""Lint rules over ECS task definitions and services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from killsafe import contract
from killsafe.checks import Finding
from killsafe.lint import roles
from killsafe.lint.budget import declared, grace_findings
from killsafe.lint.model import EcsService, LintObject, RedisSettings, TaskDefinition
from killsafe.lint.redis import command_settings, evicting_findings
from killsafe.lint.registry import finding, rule
from killsafe.spec import FARGATE_MAX_STOP_TIMEOUT_SECONDS

ROLE_TAGS = ("killsafe.dev/role", "killsafe:component")


def _command(c: dict[str, Any]) -> list[object]:
    return [*(c.get("entryPoint") or []), *(c.get("command") or [])]


def _env(c: dict[str, Any]) -> dict[str, object]:
    return {str(e.get("name")): e.get("value") for e in c.get("environment") or [] if isinstance(e, dict)}


def role(task: TaskDefinition) -> roles.Role:
    tags = {("killsafe.dev/role" if k in ROLE_TAGS else k): v for k, v in task.tags.items()}
    return roles.guess(
        labels=[tags, *(c.get("dockerLabels") or {} for c in task.containers)],
        commands=[_command(c) for c in task.containers],
        images=[c.get("image") for c in task.containers],
        env_names=[n for c in task.containers for n in _env(c)],
        exposes_ports=any(c.get("portMappings") for c in task.containers),
        name=str(task.body.get("family", "")),
    )


def main_containers(task: TaskDefinition, tier: str) -> list[tuple[str, dict[str, Any]]]:
    indexed = [(f"{task.prefix}containerDefinitions[{i}]", c) for i, c in enumerate(task.containers)]
    main = [
        (p, c)
        for p, c in indexed
        if not roles.is_redis_image(c.get("image"))
        and (roles.command_role(_command(c)) in ("worker", "web", "web+worker") or tier in str(c.get("name")))
    ]
    essential = [(p, c) for p, c in indexed if c.get("essential", True)]
    return main or essential[:1] or indexed[:1]


def _tasks(objects: list[LintObject]) -> Iterator[tuple[TaskDefinition, roles.Role]]:
    for o in objects:
        if isinstance(o, TaskDefinition):
            yield o, role(o)


@rule("KS001")
def stop_timeout(objects: list[LintObject]) -> Iterator[Finding]:
    for task, r in _tasks(objects):
        if r not in ("worker", "web+worker", "unknown"):
            continue
        for path, c in main_containers(task, "worker"):
            budget = declared([("tag", task.tags), ("docker label", c.get("dockerLabels") or {})], [_env(c)])
            value = c.get("stopTimeout")
            worker = r != "unknown"
            yield from grace_findings(
                "ecs",
                task.file,
                task.ref,
                f"{path}.stopTimeout",
                setting="stopTimeout",
                value=float(value) if isinstance(value, int | float) else None,
                budget=budget,
                worker=worker,
            )
            fargate = "FARGATE" in (task.body.get("requiresCompatibilities") or [])
            if fargate and isinstance(value, int) and value > FARGATE_MAX_STOP_TIMEOUT_SECONDS:
                yield finding(
                    "KS001",
                    task.file,
                    task.ref,
                    f"{path}.stopTimeout",
                    hazard=f"stopTimeout {value} exceeds Fargate's {FARGATE_MAX_STOP_TIMEOUT_SECONDS} s cap: "
                    f"tasks are SIGKILLed at {FARGATE_MAX_STOP_TIMEOUT_SECONDS} s anyway",
                    fix="shorten or checkpoint the jobs, or run this worker on Kubernetes or systemd",
                )


def _checks_consumption(command: list[str]) -> bool:
    text = " ".join(command)
    return contract.LIVE_PATH in text or "--probe live" in text


@rule("KS002")
def health_check(objects: list[LintObject]) -> Iterator[Finding]:
    for task, r in _tasks(objects):
        if r in ("redis", "other"):
            continue
        worker = r in ("worker", "web+worker")
        for path, c in main_containers(task, "worker" if worker else "web"):
            check = c.get("healthCheck")
            if not isinstance(check, dict):
                yield finding(
                    "KS002",
                    task.file,
                    task.ref,
                    f"{path}.healthCheck",
                    hazard=f"container {c.get('name')} has no healthCheck: ECS never replaces a worker that "
                    f"stopped consuming"
                    if worker
                    else f"container {c.get('name')} has no healthCheck",
                    fix="add a healthCheck that fails when jobs wait and none is processed (killsafe's worker: "
                    "CMD killsafe-worker healthcheck --probe live)",
                    level="error" if worker else "warning",
                )
                continue
            command = [str(x) for x in check.get("command") or []]
            if worker and contract.READY_PATH in " ".join(command):
                yield finding(
                    "KS002",
                    task.file,
                    task.ref,
                    f"{path}.healthCheck.command",
                    hazard=f"the healthCheck runs the readiness check ({contract.READY_PATH}): every task is "
                    f"replaced while Redis is down",
                    fix=f"check liveness ({contract.LIVE_PATH}, or killsafe-worker healthcheck --probe live)",
                )
            elif worker and not _checks_consumption(command):
                yield finding(
                    "KS002",
                    task.file,
                    task.ref,
                    f"{path}.healthCheck.command",
                    hazard=f"the healthCheck runs {' '.join(command[1:]) or '(nothing)'}: unless it fails when "
                    f"jobs wait and none is processed, a stuck worker passes it",
                    fix=f"make it check consumption (killsafe's worker contract: {contract.LIVE_PATH})",
                    level="warning",
                )


@rule("KS003")
def memory(objects: list[LintObject]) -> Iterator[Finding]:
    for task, _ in _tasks(objects):
        if str(task.body.get("memory", "")).strip():
            continue
        for i, c in enumerate(task.containers):
            if not isinstance(c.get("memory"), int):
                yield finding(
                    "KS003",
                    task.file,
                    task.ref,
                    f"{task.prefix}containerDefinitions[{i}].memory",
                    hazard=f"container {c.get('name')} has no memory limit and the task none either: it can "
                    f"take the instance's memory until the OOM killer picks victims mid-job",
                    fix="set the task's memory (Fargate requires it) or the container's memory",
                )


@rule("KS004")
def split(objects: list[LintObject]) -> Iterator[Finding]:
    for task, _ in _tasks(objects):
        tiers = {roles.command_role(_command(c)) for c in task.containers}
        for i, c in enumerate(task.containers):
            path = f"{task.prefix}containerDefinitions[{i}].command"
            manager = roles.process_manager(_command(c))
            if roles.command_role(_command(c)) == "web+worker":
                yield finding(
                    "KS004",
                    task.file,
                    task.ref,
                    path,
                    hazard=f"container {c.get('name')} runs web and worker in one process tree: they share one "
                    f"stopTimeout and neither scales alone",
                    fix="run web and worker as two ECS services from the same image",
                )
            elif manager is not None:
                yield finding(
                    "KS004",
                    task.file,
                    task.ref,
                    path,
                    hazard=f"container {c.get('name')} runs the process manager {manager}: web and worker may "
                    f"share one fate",
                    fix="one process per container, one service per tier",
                    level="warning",
                )
        if {"web", "worker"} <= tiers:
            yield finding(
                "KS004",
                task.file,
                task.ref,
                f"{task.prefix}containerDefinitions",
                hazard="one task definition runs a web container and a worker container: they scale and roll together",
                fix="give each tier its own task definition and service",
            )


@rule("KS007")
def redis_args(objects: list[LintObject]) -> Iterator[Finding]:
    for task, _ in _tasks(objects):
        for i, c in enumerate(task.containers):
            found = command_settings(_command(c), roles.is_redis_image(c.get("image")))
            if found:
                yield from evicting_findings(
                    RedisSettings(task.file, task.ref, f"{task.prefix}containerDefinitions[{i}].command", found)
                )


@rule("KS008")
def deployment(objects: list[LintObject]) -> Iterator[Finding]:
    for o in objects:
        if isinstance(o, EcsService) and "worker" in str(o.body.get("serviceName", "")):
            config = o.body.get("deploymentConfiguration") or {}
            minimum = config.get("minimumHealthyPercent", 100)
            if isinstance(minimum, int) and minimum < 100:
                yield finding(
                    "KS008",
                    o.file,
                    o.ref,
                    "deploymentConfiguration.minimumHealthyPercent",
                    hazard=f"minimumHealthyPercent {minimum} stops workers before new ones are healthy",
                    fix="set minimumHealthyPercent 100 and maximumPercent 200",
                    level="warning",
                )
