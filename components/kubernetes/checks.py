"""The checklist rules (killsafe.checks.RULE_TITLES) over Kubernetes objects.

They read plain manifests, so they work on the builder's output and on rendered files edited by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.checks import Finding, RuleSet, memory_per_job_warning
from killsafe.kubernetes.web import METRICS_PORT_NAME as WEB_METRICS_PORT_NAME
from killsafe.spec import WorkloadSpec

COMPONENT_LABEL = "app.kubernetes.io/component"
Manifest = dict[str, Any]


RULES = RuleSet("kubernetes")


def check_kubernetes(spec: WorkloadSpec, manifests: list[Manifest]) -> list[Finding]:
    """Every finding of every rule, in rule order."""
    return RULES.run(spec, manifests)


def _ref(m: Manifest) -> str:
    return f"{m.get('kind')}/{m.get('metadata', {}).get('name')}"


def _component(m: Manifest) -> str | None:
    labels = m.get("metadata", {}).get("labels", {}) or {}
    value = labels.get(COMPONENT_LABEL)
    return str(value) if value is not None else None


def _workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    yield from (m for m in manifests if m.get("kind") in ("Deployment", "StatefulSet"))


def _pod(m: Manifest) -> dict[str, Any]:
    return dict(m.get("spec", {}).get("template", {}).get("spec", {}))


def _containers(m: Manifest) -> list[dict[str, Any]]:
    return list(_pod(m).get("containers", []))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", []) or []}


def _deployments(manifests: list[Manifest], component: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == "Deployment" and _component(m) == component]


@RULES.rule("KS001")
def _grace(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    budget = shutdown_budget(spec.worker)
    workers = _deployments(manifests, "worker")
    if not workers:
        yield Finding("KS001", "Deployment/?", "no worker Deployment (label app.kubernetes.io/component=worker)")
    for m in workers:
        grace = _pod(m).get("terminationGracePeriodSeconds", 30)
        if grace < budget.kill_deadline_seconds:
            yield Finding(
                "KS001",
                _ref(m),
                f"terminationGracePeriodSeconds {grace} is shorter than max_job_seconds "
                f"({budget.max_job_seconds}) + drain_margin_seconds ({budget.drain_margin_seconds}) = "
                f"{budget.kill_deadline_seconds}: jobs would be killed mid-way on every deploy",
            )
        for c in _containers(m):
            raw = _env(c).get(contract.ENV_SHUTDOWN_TIMEOUT_SECONDS)
            if raw is None or not str(raw).isdigit():
                yield Finding(
                    "KS001",
                    _ref(m),
                    f"container {c['name']} has no numeric "
                    f"{contract.ENV_SHUTDOWN_TIMEOUT_SECONDS}: the worker would not know its drain deadline",
                )
                continue
            drain = int(raw)
            if not budget.max_job_seconds <= drain < grace:
                yield Finding(
                    "KS001",
                    _ref(m),
                    f"{contract.ENV_SHUTDOWN_TIMEOUT_SECONDS}={drain} must be >= max_job_seconds "
                    f"({budget.max_job_seconds}) and < terminationGracePeriodSeconds ({grace})",
                )


@RULES.rule("KS002")
def _probes(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    for m in _workloads(manifests):
        for c in _containers(m):
            wanted = ["readinessProbe", "livenessProbe"]
            if _component(m) == "worker":
                wanted.append("startupProbe")
            missing = [p for p in wanted if p not in c]
            if missing:
                yield Finding("KS002", _ref(m), f"container {c['name']} has no {', '.join(missing)}")
            if _component(m) == "worker":
                # A startup or liveness probe on /readyz would restart a worker because Redis is down.
                for probe_name, path in (
                    ("startupProbe", contract.LIVE_PATH),
                    ("readinessProbe", contract.READY_PATH),
                    ("livenessProbe", contract.LIVE_PATH),
                ):
                    get = c.get(probe_name, {}).get("httpGet", {})
                    if get and (get.get("path") != path or get.get("port") != spec.worker.health_port):
                        yield Finding(
                            "KS002",
                            _ref(m),
                            f"{probe_name} must GET {path} on port "
                            f"{spec.worker.health_port}, not {get.get('path')} on {get.get('port')}",
                        )


@RULES.rule("KS003")
def _limits(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    for m in _workloads(manifests):
        for c in _containers(m):
            resources = c.get("resources", {}) or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(section) or {}):
                        yield Finding("KS003", _ref(m), f"container {c['name']} has no {section}.{resource}")
    for m in _deployments(manifests, "worker"):
        for c in _containers(m):
            memory = _mebibytes(((c.get("resources") or {}).get("limits") or {}).get("memory"))
            jobs = _jobs_in_flight(_env(c))
            if memory is not None and jobs:
                warning = memory_per_job_warning("KS003", _ref(m), memory, jobs)
                if warning is not None:
                    yield warning


_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def _mebibytes(quantity: object) -> int | None:
    """`512Mi` / `1Gi` / `1048576Ki` -> MiB; other spellings are left alone (None)."""
    text = str(quantity or "")
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(int(text[: -len(unit)]) * factor)
    return None


def _jobs_in_flight(env: dict[str, Any]) -> int | None:
    """Jobs one worker process runs at once: concurrency per queue x queues, as its env says."""
    per_queue = str(env.get(contract.ENV_CONCURRENCY_PER_QUEUE) or "")
    queues = [q for q in str(env.get(contract.ENV_QUEUES) or "").split(",") if q]
    return int(per_queue) * len(queues) if per_queue.isdigit() and queues else None


@RULES.rule("KS004")
def _split(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    workers = _deployments(manifests, "worker")
    webs = _deployments(manifests, "web")
    dashboards = _deployments(manifests, "dashboard")
    if spec.web is not None and not webs:
        yield Finding("KS004", "Deployment/?", "the spec has a web tier but there is no web Deployment")
    for m in workers:
        if any(w is m for w in webs):
            yield Finding("KS004", _ref(m), "one Deployment runs both web and worker")
    for service in (m for m in manifests if m.get("kind") == "Service"):
        selector = service.get("spec", {}).get("selector", {}) or {}
        if selector.get(COMPONENT_LABEL) == "worker" or _selects(selector, workers):
            yield Finding("KS004", _ref(service), "selects worker pods: workers take no traffic")
        if selector.get(COMPONENT_LABEL) == "dashboard" or _selects(selector, dashboards):
            yield from _dashboard_exposure(spec, service, _selects(selector, webs))
        if selector.get(COMPONENT_LABEL) == "web" or _selects(selector, webs):
            yield from _web_metrics_exposure(service)


def _web_metrics_exposure(service: Manifest) -> Iterator[Finding]:
    """The web's metrics port is for the scraper (PodMonitor, pod IPs), never behind a Service."""
    for port in service.get("spec", {}).get("ports", []) or []:
        targets = {port.get("port"), port.get("targetPort")}
        if contract.WEB_METRICS_PORT in targets or WEB_METRICS_PORT_NAME in targets:
            yield Finding(
                "KS004",
                _ref(service),
                f"exposes the web app's metrics port {contract.WEB_METRICS_PORT}: Prometheus scrapes it on the pods "
                "(PodMonitor); a Service would hand internals to whatever reaches the web",
            )
            return


def _selects(selector: dict[str, Any], deployments: list[Manifest]) -> bool:
    """Whether a Service selector matches the pods of any of these Deployments."""
    return bool(selector) and any(selector.items() <= _template_labels(d).items() for d in deployments)


def _dashboard_exposure(spec: WorkloadSpec, service: Manifest, selects_web: bool) -> Iterator[Finding]:
    """The dashboard is internal: only its own ClusterIP Service, on its own port, may reach its pods."""
    body = service.get("spec", {}) or {}
    web_port = spec.web.port if spec.web is not None else None
    ports = body.get("ports", []) or []
    if selects_web:
        yield Finding(
            "KS004",
            _ref(service),
            "selects both web and dashboard pods: the public web Service would serve the dashboard",
        )
    if web_port is not None and any(web_port in (p.get("port"), p.get("targetPort")) for p in ports):
        yield Finding(
            "KS004",
            _ref(service),
            f"exposes the dashboard pods on the web port {web_port}: the dashboard has its own, internal port "
            f"({spec.dashboard.port}) and Service",
        )
    kind = body.get("type", "ClusterIP")
    external = ", externalIPs" if body.get("externalIPs") else ""
    if kind != "ClusterIP" or external:
        yield Finding(
            "KS004",
            _ref(service),
            f"exposes the dashboard outside the cluster (type {kind}{external}): keep it ClusterIP and reach it "
            "with kubectl port-forward or through an auth proxy (dashboard.allowed_from)",
        )


def _template_labels(m: Manifest) -> dict[str, Any]:
    return dict(m.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {})


@RULES.rule("KS005")
def _security(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    for m in _workloads(manifests):
        pod = _pod(m)
        if pod.get("automountServiceAccountToken") is not False:
            yield Finding("KS005", _ref(m), "automountServiceAccountToken is not false")
        pod_ctx = pod.get("securityContext", {}) or {}
        for c in [*_containers(m), *pod.get("initContainers", [])]:
            ctx = {**pod_ctx, **(c.get("securityContext", {}) or {})}
            problems = []
            if ctx.get("runAsNonRoot") is not True:
                problems.append("runAsNonRoot is not true")
            if ctx.get("readOnlyRootFilesystem") is not True:
                problems.append("root filesystem is writable")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append("allowPrivilegeEscalation is not false")
            if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
                problems.append("capabilities are not dropped (drop: [ALL])")
            if (ctx.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append("no seccompProfile RuntimeDefault")
            if problems:
                yield Finding("KS005", _ref(m), f"container {c['name']}: {'; '.join(problems)}")


@RULES.rule("KS006")
def _secrets(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    for m in manifests:
        if m.get("kind") == "Secret" and (m.get("data") or m.get("stringData")):
            yield Finding("KS006", _ref(m), "a Secret with its values written into a manifest")
    for m in _workloads(manifests):
        for c in [*_containers(m), *_pod(m).get("initContainers", [])]:
            texts = [str(v) for v in _env(c).values() if v is not None]
            texts += [str(a) for a in [*c.get("args", []), *c.get("command", [])]]
            for name, value in _env(c).items():
                if value is not None and any(w in name.upper() for w in ("PASSWORD", "SECRET", "TOKEN")):
                    yield Finding("KS006", _ref(m), f"container {c['name']} sets {name} in plain text")
            if any("redis://" in t and "@" in t for t in texts):
                yield Finding("KS006", _ref(m), f"container {c['name']} carries a Redis URL with credentials")


@RULES.rule("KS007")
def _redis(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    if spec.redis.mode != "in-cluster":
        return
    configs = [m for m in manifests if m.get("kind") == "ConfigMap" and _component(m) == "redis"]
    text = "\n".join(str(v) for m in configs for v in (m.get("data") or {}).values())
    for directive in ("maxmemory-policy noeviction", "appendonly yes"):
        if directive not in text:
            yield Finding(
                "KS007",
                "ConfigMap/redis",
                f"redis.conf lacks '{directive}': queue keys could be evicted or lost on restart",
            )


@RULES.rule("KS008")
def _rollout(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    for m in _deployments(manifests, "worker"):
        strategy = m.get("spec", {}).get("strategy", {}) or {}
        rolling = strategy.get("rollingUpdate", {}) or {}
        if strategy.get("type") == "Recreate" or rolling.get("maxUnavailable", "25%") not in (0, "0", "0%"):
            yield Finding(
                "KS008",
                _ref(m),
                "rolling update may take workers down before new ones are ready; set maxUnavailable: 0",
            )


@RULES.rule("KS009")
def _pdb(spec: WorkloadSpec, manifests: list[Manifest]) -> Iterator[Finding]:
    if not spec.kubernetes.pod_disruption_budgets:
        return
    pdbs = [m for m in manifests if m.get("kind") == "PodDisruptionBudget"]
    if not any(_component(p) == "worker" for p in pdbs):
        yield Finding("KS009", "PodDisruptionBudget/?", "no PodDisruptionBudget for the worker pods")
