"""Monitoring on Kubernetes: PodMonitors (scraping), a PrometheusRule (the alerts) and the Grafana
dashboard ConfigMap, all from the target-neutral definitions in `killsafe.observability`.

Series are found by what the Prometheus Operator attaches to every scraped sample: `namespace` and
`job`, which for a PodMonitor without `jobLabel` is `<namespace>/<PodMonitor name>`. The alerts over
kube-state-metrics select the worker containers by namespace, pod name and container name.
Opt-outs: `kubernetes.prometheus_operator: false` (no PodMonitor/PrometheusRule, for clusters without
the operator's CRDs), `kubernetes.grafana_dashboard: false`, `alerts.enabled: false`.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.kubernetes.labels import common_labels, object_meta, selector_labels
from killsafe.kubernetes.redis_access import exporter_selector
from killsafe.kubernetes.redis_exporter import PORT_NAME as EXPORTER_PORT_NAME
from killsafe.kubernetes.redis_exporter import exporter_name
from killsafe.kubernetes.web import METRICS_PORT_NAME as WEB_METRICS_PORT_NAME
from killsafe.kubernetes.web import web_name
from killsafe.kubernetes.worker import HEALTH_PORT_NAME, worker_name
from killsafe.observability.alerts import KSM_DEPLOYMENT_REPLICAS, AlertTiming, Selectors, duration, matchers
from killsafe.observability.dashboard import dashboard_json
from killsafe.observability.prometheus import rule_groups
from killsafe.spec import WorkloadSpec

MONITORING_API = "monitoring.coreos.com/v1"
SCRAPE_INTERVAL_SECONDS = 30
"""Set on every PodMonitor (the alert windows are sized for it), whatever the Prometheus default."""
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
"""The Grafana Helm chart's dashboard sidecar loads ConfigMaps with this label (value "1")."""


def job_label(namespace: str, pod_monitor: str) -> str:
    return f"{namespace}/{pod_monitor}"


def selectors(spec: WorkloadSpec) -> Selectors:
    """Where each source's series are on Kubernetes."""
    ns = spec.kubernetes.namespace
    worker = worker_name(spec)  # a DNS label: no regex metacharacter but '-', literal outside brackets
    redis: str | None = None
    if spec.redis.exporter.enabled:
        redis = matchers(namespace=ns, job=job_label(ns, exporter_name(spec)))
    elif spec.alerts.redis_metrics_selector is not None:
        redis = matchers(**spec.alerts.redis_metrics_selector)
    expected = None
    if spec.worker.autoscaling is not None:
        expected = f"max({desired_replicas(ns, worker)})"
    return Selectors(
        worker=matchers(namespace=ns, job=job_label(ns, worker)),
        web=matchers(namespace=ns, job=job_label(ns, web_name(spec))) if spec.web is not None else None,
        expected_workers=expected,
        kube_state=f'namespace="{ns}",pod=~"{worker}-[a-z0-9]+-[a-z0-9]+",container="worker"',
        redis=redis,
    )


def desired_replicas(namespace: str, deployment: str) -> str:
    """The Deployment's desired replicas as kube-state-metrics reports them (the HPA sets it)."""
    return f"{KSM_DEPLOYMENT_REPLICAS}{{{matchers(namespace=namespace, deployment=deployment)}}}"


def timing(spec: WorkloadSpec) -> AlertTiming:
    return AlertTiming.for_spec(spec.alerts, SCRAPE_INTERVAL_SECONDS)


def _monitoring_meta(spec: WorkloadSpec, name: str, namespace: str | None = None) -> dict[str, Any]:
    labels = {**common_labels(spec), **spec.kubernetes.monitoring_labels}
    return object_meta(name, namespace or spec.kubernetes.namespace, labels)


def pod_monitor(spec: WorkloadSpec, name: str, selector: dict[str, str], port: str) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": _monitoring_meta(spec, name),
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [spec.kubernetes.namespace]},
            "podMetricsEndpoints": [
                {
                    "port": port,
                    "path": contract.METRICS_PATH,
                    "scheme": "http",
                    "interval": duration(SCRAPE_INTERVAL_SECONDS),
                    "scrapeTimeout": "10s",
                }
            ],
        },
    }


def pod_monitors(spec: WorkloadSpec) -> list[dict[str, Any]]:
    """The workers' /metrics, the web app's (on its metrics port, its own PodMonitor so its `job` and
    `up` never count as workers), and the Redis exporter's when enabled."""
    monitors = [pod_monitor(spec, worker_name(spec), selector_labels(spec, "worker"), HEALTH_PORT_NAME)]
    if spec.web is not None:
        monitors.append(pod_monitor(spec, web_name(spec), selector_labels(spec, "web"), WEB_METRICS_PORT_NAME))
    if spec.redis.exporter.enabled:
        monitors.append(pod_monitor(spec, exporter_name(spec), exporter_selector(spec), EXPORTER_PORT_NAME))
    return monitors


def prometheus_rule(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": _monitoring_meta(spec, f"{spec.name}-alerts"),
        "spec": rule_groups(spec, timing(spec), selectors(spec)),
    }


def dashboard_config_map(spec: WorkloadSpec) -> dict[str, Any]:
    namespace = spec.kubernetes.grafana_dashboard_namespace or spec.kubernetes.namespace
    meta = _monitoring_meta(spec, f"{spec.name}-dashboard", namespace)
    meta["labels"][GRAFANA_DASHBOARD_LABEL] = "1"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {f"killsafe-{spec.name}.json": dashboard_json(spec, selectors(spec), spec.kubernetes.namespace)},
    }


def monitoring_manifests(spec: WorkloadSpec) -> list[dict[str, Any]]:
    """Everything monitoring-related the spec asks for, in apply order."""
    manifests: list[dict[str, Any]] = []
    if spec.kubernetes.prometheus_operator:
        manifests += pod_monitors(spec)
        if spec.alerts.enabled:
            manifests.append(prometheus_rule(spec))
    if spec.kubernetes.grafana_dashboard:
        manifests.append(dashboard_config_map(spec))
    return manifests
