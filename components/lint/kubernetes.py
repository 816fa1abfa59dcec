"""Lint rules over Kubernetes objects (Deployments, StatefulSets, DaemonSets, PDBs, Services, NetworkPolicies)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from killsafe import contract
from killsafe.checks import Finding
from killsafe.lint import roles
from killsafe.lint.budget import Declared, declared, grace_findings
from killsafe.lint.model import KubeObject, LintObject, RedisSettings
from killsafe.lint.redis import command_settings, conf_settings, evicting_findings
from killsafe.lint.registry import finding, rule

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
PLUMBING_PORT_WORDS = ("health", "metric", "probe", "prom", "admin")


@dataclass(frozen=True)
class Workload:
    """A pod-owning object with its role, the containers the worker rules apply to, and paths."""

    obj: KubeObject
    role: roles.Role

    @property
    def pod(self) -> dict[str, Any]:
        return dict(((self.obj.doc.get("spec") or {}).get("template") or {}).get("spec") or {})

    @property
    def pod_path(self) -> str:
        return f"{self.obj.prefix}spec.template.spec"

    @property
    def containers(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (f"{self.pod_path}.containers[{i}]", c)
            for i, c in enumerate(self.pod.get("containers") or [])
            if isinstance(c, dict)
        ]

    @property
    def template_labels(self) -> dict[str, Any]:
        return dict(((self.obj.doc.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})

    def main_containers(self) -> list[tuple[str, dict[str, Any]]]:
        """The worker (or web) containers: those whose command or name says so, else the first one."""
        main = [
            (p, c)
            for p, c in self.containers
            if not roles.is_redis_image(c.get("image"))
            and (roles.command_role(_command(c)) in ("worker", "web", "web+worker") or self.role in str(c.get("name")))
        ]
        return main or self.containers[:1]

    @property
    def is_worker(self) -> bool:
        return self.role in ("worker", "web+worker")

    def budget(self) -> Declared:
        meta = self.obj.doc.get("metadata") or {}
        template = ((self.obj.doc.get("spec") or {}).get("template") or {}).get("metadata") or {}
        keyed = [
            ("annotation", meta.get("annotations") or {}),
            ("pod annotation", template.get("annotations") or {}),
            ("label", meta.get("labels") or {}),
        ]
        return declared(keyed, [_env(c) for _, c in self.main_containers()])


def _command(c: dict[str, Any]) -> list[object]:
    return [*(c.get("command") or []), *(c.get("args") or [])]


def _env(c: dict[str, Any]) -> dict[str, object]:
    return {str(e.get("name")): e.get("value") for e in c.get("env") or [] if isinstance(e, dict)}


def _exposes_ports(containers: list[tuple[str, dict[str, Any]]]) -> bool:
    return any(
        not any(w in str(p.get("name", "")).lower() for w in PLUMBING_PORT_WORDS)
        for _, c in containers
        for p in c.get("ports") or []
        if isinstance(p, dict)
    )


def workloads(objects: list[LintObject]) -> list[Workload]:
    found = []
    for o in objects:
        if isinstance(o, KubeObject) and o.kind in WORKLOAD_KINDS:
            draft = Workload(o, "unknown")
            meta = o.doc.get("metadata") or {}
            role = roles.guess(
                labels=[meta.get("labels") or {}, meta.get("annotations") or {}, draft.template_labels],
                commands=[_command(c) for _, c in draft.containers],
                images=[c.get("image") for _, c in draft.containers],
                env_names=[n for _, c in draft.containers for n in _env(c)],
                exposes_ports=_exposes_ports(draft.containers),
                name=o.name,
            )
            found.append(Workload(o, role))
    return found


@rule("KS001")
def grace(objects: list[LintObject]) -> Iterator[Finding]:
    for w in workloads(objects):
        if w.role in ("worker", "web+worker", "unknown") and w.obj.kind != "DaemonSet":
            value = w.pod.get("terminationGracePeriodSeconds")
            yield from grace_findings(
                "kubernetes",
                w.obj.file,
                w.obj.ref,
                f"{w.pod_path}.terminationGracePeriodSeconds",
                setting="terminationGracePeriodSeconds",
                value=float(value) if isinstance(value, int | float) else None,
                budget=w.budget(),
                worker=w.is_worker,
            )


@rule("KS002")
def probes(objects: list[LintObject]) -> Iterator[Finding]:
    for w in workloads(objects):
        if w.role in ("redis", "other"):
            continue
        for path, c in w.main_containers():
            name = c.get("name")
            if "livenessProbe" not in c:
                yield finding(
                    "KS002",
                    w.obj.file,
                    w.obj.ref,
                    f"{path}.livenessProbe",
                    hazard=f"container {name} has no livenessProbe: a worker that silently stops consuming is "
                    f"never restarted"
                    if w.is_worker
                    else f"container {name} has no livenessProbe: a hung process stays",
                    fix=f"add a livenessProbe that fails when jobs wait and none is processed (killsafe's "
                    f"worker: httpGet {contract.LIVE_PATH} on port {contract.HEALTH_PORT})",
                    level="error" if w.is_worker else "warning",
                )
            else:
                yield from _liveness_checks(w, path, c)
            if "readinessProbe" not in c:
                yield finding(
                    "KS002",
                    w.obj.file,
                    w.obj.ref,
                    f"{path}.readinessProbe",
                    hazard=f"container {name} has no readinessProbe: a rollout cannot tell a new pod that never "
                    f"connected from a working one",
                    fix=f"add a readinessProbe (killsafe's worker: httpGet {contract.READY_PATH} on port "
                    f"{contract.HEALTH_PORT})",
                    level="warning",
                )


def _liveness_checks(w: Workload, path: str, c: dict[str, Any]) -> Iterator[Finding]:
    if not w.is_worker:
        return
    probe = c.get("livenessProbe") or {}
    where = f"{path}.livenessProbe"
    http = probe.get("httpGet")
    if isinstance(http, dict):
        route = str(http.get("path", "/"))
        if route == contract.READY_PATH:
            yield finding(
                "KS002",
                w.obj.file,
                w.obj.ref,
                f"{where}.httpGet.path",
                hazard=f"the liveness probe GETs {route}, the readiness check: every worker restarts while "
                f"Redis is down",
                fix=f"probe {contract.LIVE_PATH} for liveness, {contract.READY_PATH} for readiness only",
            )
        elif route != contract.LIVE_PATH:
            yield finding(
                "KS002",
                w.obj.file,
                w.obj.ref,
                f"{where}.httpGet.path",
                hazard=f"the liveness probe GETs {route}: unless that fails when jobs wait and none is "
                f"processed, a worker that stopped consuming passes it",
                fix=f"make it check consumption (killsafe's worker contract: {contract.LIVE_PATH})",
                level="warning",
            )
    elif "tcpSocket" in probe or "grpc" in probe or "exec" in probe:
        kind = next(k for k in ("tcpSocket", "grpc", "exec") if k in probe)
        yield finding(
            "KS002",
            w.obj.file,
            w.obj.ref,
            f"{where}.{kind}",
            hazard=f"the liveness probe is a {kind} check: it proves the process answers, not that it still "
            f"consumes jobs",
            fix=f"probe an endpoint that fails when jobs wait and none is processed (killsafe: {contract.LIVE_PATH})",
            level="warning",
        )


@rule("KS003")
def memory(objects: list[LintObject]) -> Iterator[Finding]:
    for w in workloads(objects):
        for path, c in w.containers:
            limits = (c.get("resources") or {}).get("limits") or {}
            if "memory" not in limits:
                yield finding(
                    "KS003",
                    w.obj.file,
                    w.obj.ref,
                    f"{path}.resources.limits.memory",
                    hazard=f"container {c.get('name')} has no memory limit: one leak takes the node's memory "
                    f"and the kernel's OOM killer picks its victims, mid-job",
                    fix="set resources.limits.memory (and requests.memory equal to it)",
                )


@rule("KS004")
def split(objects: list[LintObject]) -> Iterator[Finding]:
    found = workloads(objects)
    for w in found:
        tiers = {roles.command_role(_command(c)) for _, c in w.containers}
        for path, c in w.containers:
            manager = roles.process_manager(_command(c))
            if roles.command_role(_command(c)) == "web+worker":
                yield finding(
                    "KS004",
                    w.obj.file,
                    w.obj.ref,
                    f"{path}.command",
                    hazard=f"container {c.get('name')} runs web and worker in one process tree: a deploy kills "
                    f"both, the web's short grace cuts jobs, and neither scales alone",
                    fix="run web and worker as two Deployments from the same image",
                )
            elif manager is not None:
                yield finding(
                    "KS004",
                    w.obj.file,
                    w.obj.ref,
                    f"{path}.command",
                    hazard=f"container {c.get('name')} runs the process manager {manager}: if it starts web and "
                    f"worker together, they share one grace period and one fate",
                    fix="run each process as its own Deployment (one process per container)",
                    level="warning",
                )
        if {"web", "worker"} <= tiers:
            yield finding(
                "KS004",
                w.obj.file,
                w.obj.ref,
                f"{w.pod_path}.containers",
                hazard="one pod runs a web container and a worker container: they scale, roll and die together",
                fix="split them into two Deployments",
            )
    for o in objects:
        if isinstance(o, KubeObject) and o.kind == "Service":
            selector = (o.doc.get("spec") or {}).get("selector") or {}
            for w in found:
                if w.role == "worker" and selector and selector.items() <= w.template_labels.items():
                    yield finding(
                        "KS004",
                        o.file,
                        o.ref,
                        f"{o.prefix}spec.selector",
                        hazard=f"routes traffic to the worker pods of {w.obj.ref}: requests die with every drain",
                        fix="select only the web pods; workers take no traffic",
                    )


@rule("KS007")
def redis_eviction(objects: list[LintObject]) -> Iterator[Finding]:
    for settings in redis_settings(objects):
        yield from evicting_findings(settings)


def redis_settings(objects: list[LintObject]) -> Iterator[RedisSettings]:
    """Redis directives in ConfigMaps (a redis.conf key) and Redis containers' args."""
    for o in objects:
        if isinstance(o, KubeObject) and o.kind == "ConfigMap":
            for key, text in (o.doc.get("data") or {}).items():
                if "maxmemory" in str(text) or str(key).endswith("redis.conf"):
                    yield RedisSettings(o.file, o.ref, f"{o.prefix}data.{key}", conf_settings(str(text)))
    for w in workloads(objects):
        for path, c in w.containers:
            found = command_settings(_command(c), roles.is_redis_image(c.get("image")))
            if found:
                yield RedisSettings(w.obj.file, w.obj.ref, f"{path}.args", found)


@rule("KS008")
def rollout(objects: list[LintObject]) -> Iterator[Finding]:
    for w in workloads(objects):
        if not w.is_worker or w.obj.kind != "Deployment":
            continue
        strategy = (w.obj.doc.get("spec") or {}).get("strategy") or {}
        path = f"{w.obj.prefix}spec.strategy"
        if strategy.get("type") == "Recreate":
            yield finding(
                "KS008",
                w.obj.file,
                w.obj.ref,
                f"{path}.type",
                hazard="strategy Recreate stops every worker before any new one starts: no worker runs during a "
                "deploy and all in-flight jobs drain at once",
                fix="use RollingUpdate with maxUnavailable: 0 and maxSurge: 1",
            )
            continue
        unavailable = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
        if unavailable not in (0, "0", "0%"):
            yield finding(
                "KS008",
                w.obj.file,
                w.obj.ref,
                f"{path}.rollingUpdate.maxUnavailable",
                hazard=f"maxUnavailable {unavailable} (25% when unset) takes workers down before new ones are ready",
                fix="set rollingUpdate.maxUnavailable: 0 (and maxSurge: 1)",
                level="warning",
            )


@rule("KS010")
def disruption_budget(objects: list[LintObject]) -> Iterator[Finding]:
    found = workloads(objects)
    for o in objects:
        if not (isinstance(o, KubeObject) and o.kind == "PodDisruptionBudget"):
            continue
        spec = o.doc.get("spec") or {}
        path = f"{o.prefix}spec"
        hazard = ""
        if spec.get("maxUnavailable") in (0, "0", "0%"):
            hazard, path = "maxUnavailable 0 blocks every eviction", f"{path}.maxUnavailable"
        elif spec.get("minAvailable") == "100%":
            hazard, path = "minAvailable 100% blocks every eviction", f"{path}.minAvailable"
        elif isinstance(spec.get("minAvailable"), int):
            match = (spec.get("selector") or {}).get("matchLabels") or {}
            for w in found:
                replicas = (w.obj.doc.get("spec") or {}).get("replicas", 1)
                if match and match.items() <= w.template_labels.items() and spec["minAvailable"] >= replicas:
                    hazard = (
                        f"minAvailable {spec['minAvailable']} >= the {replicas} replica(s) of {w.obj.ref}: no pod "
                        "may ever be evicted"
                    )
                    path = f"{path}.minAvailable"
        if hazard:
            yield finding(
                "KS010",
                o.file,
                o.ref,
                path,
                hazard=f"{hazard}; node drains and cluster upgrades hang until someone deletes the PDB",
                fix="allow one eviction at a time: maxUnavailable: 1 (the worker drains on SIGTERM)",
            )


@rule("KS011")
def redis_exposure(objects: list[LintObject]) -> Iterator[Finding]:
    redis_labels = [w.template_labels for w in workloads(objects) if w.role == "redis"]
    for o in objects:
        if not isinstance(o, KubeObject):
            continue
        spec = o.doc.get("spec") or {}
        if o.kind == "Service" and spec.get("type") in ("LoadBalancer", "NodePort"):
            ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
            selector = spec.get("selector") or {}
            to_redis = any(contract.REDIS_PORT in (p.get("port"), p.get("targetPort")) for p in ports) or any(
                selector and selector.items() <= labels.items() for labels in redis_labels
            )
            if to_redis:
                yield finding(
                    "KS011",
                    o.file,
                    o.ref,
                    f"{o.prefix}spec.type",
                    hazard=f"a {spec['type']} Service exposes Redis outside the cluster",
                    fix="use a ClusterIP Service and a NetworkPolicy that admits only the web and worker pods",
                )
        if o.kind == "NetworkPolicy":
            selected = (spec.get("podSelector") or {}).get("matchLabels") or {}
            for i, rule_ in enumerate(spec.get("ingress") or []):
                rule_ports: list[object] = [p.get("port") for p in rule_.get("ports") or [] if isinstance(p, dict)]
                redis_pods = any(selected.items() <= labels.items() for labels in redis_labels) and bool(selected)
                if not (redis_pods or contract.REDIS_PORT in rule_ports):
                    continue
                for j, peer in enumerate(rule_.get("from") or []):
                    cidr = str((peer.get("ipBlock") or {}).get("cidr", ""))
                    if cidr in OPEN_CIDRS:
                        yield finding(
                            "KS011",
                            o.file,
                            o.ref,
                            f"{o.prefix}spec.ingress[{i}].from[{j}].ipBlock.cidr",
                            hazard=f"admits {cidr} to Redis",
                            fix="admit only the web and worker pods (podSelector), never an open CIDR",
                        )
