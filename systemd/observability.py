"""Prometheus and Grafana for VMs, from the shared definitions in `killsafe.observability`.

- `prometheus/scrape-configs.yml`: where the units' metrics are (every worker instance's health port on
  every host; node_exporter too when `systemd.node_exporter_port` is set);
- `prometheus/rules.yml`: the alerts, the same `rule_groups` the Kubernetes PrometheusRule carries,
  with VM selectors (the static scrape jobs below);
- `grafana/dashboard.json`: the same dashboard the Kubernetes ConfigMap holds.

What a VM lacks is left out, not imitated: there is no kube-state-metrics, so WorkerRestarting comes
from node_exporter's systemd collector (systemd's own NRestarts of each worker unit) when the hosts
run one, and WorkerOOMKilled is not emitted (node_exporter has no per-unit OOM series; an OOM-killed
worker is restarted, which WorkerRestarting counts, and the journal names `oom-kill`). The Redis
alerts are emitted when `alerts.redis_metrics_selector` names your redis_exporter's series. Every
file returned here is rendered, pushed by SystemdWorkload and listed in the rendered README.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.observability.alerts import AlertTiming, Selectors, duration, matchers
from killsafe.observability.dashboard import dashboard_json
from killsafe.observability.prometheus import rule_groups
from killsafe.spec import WorkloadSpec
from killsafe.systemd.layout import layout

SCRAPE_CONFIGS_FILE = "prometheus/scrape-configs.yml"
RULES_FILE = "prometheus/rules.yml"
DASHBOARD_FILE = "grafana/dashboard.json"
SCRAPE_INTERVAL_SECONDS = 15
"""Set on every scrape job (the alert windows are sized from it), whatever the Prometheus default."""


def worker_job(spec: WorkloadSpec) -> str:
    return f"{spec.name}-worker"


def web_job(spec: WorkloadSpec) -> str:
    return f"{spec.name}-web"


def node_job(spec: WorkloadSpec) -> str:
    return f"{spec.name}-node"


def _hosts(spec: WorkloadSpec) -> list[str]:
    return [host.address for host in spec.systemd.hosts] or ["localhost"]


def selectors(spec: WorkloadSpec) -> Selectors:
    """Where each source's series are: the static scrape jobs of `scrape_configs`."""
    units = None
    if spec.systemd.node_exporter_port is not None:
        # A unit name is [A-Za-z0-9:_.@-]: only `.` is a regex metacharacter, escaped for PromQL's string.
        template = layout(spec).worker_template.replace("@.service", "").replace(".", "\\\\.")
        units = f'{matchers(job=node_job(spec))},name=~"{template}@[0-9]+\\\\.service"'
    redis = spec.alerts.redis_metrics_selector
    return Selectors(
        worker=matchers(job=worker_job(spec)),
        web=matchers(job=web_job(spec)) if spec.web is not None else None,
        systemd_units=units,
        redis=matchers(**redis) if redis is not None else None,
    )


def timing(spec: WorkloadSpec) -> AlertTiming:
    return AlertTiming.for_spec(spec.alerts, SCRAPE_INTERVAL_SECONDS)


def _job(name: str, path: str, targets: list[str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "job_name": name,
        "metrics_path": path,
        "scrape_interval": duration(SCRAPE_INTERVAL_SECONDS),
        "static_configs": [{"targets": targets, "labels": labels}],
    }


def scrape_configs(spec: WorkloadSpec) -> dict[str, Any]:
    """The workers: every instance's health port on every host (localhost if none given); the web's
    metrics port; node_exporter."""
    where = layout(spec)
    hosts = _hosts(spec)
    workers = [f"{host}:{port}" for host in hosts for port in where.worker_ports]
    jobs = [_job(worker_job(spec), contract.METRICS_PATH, workers, {"workload": spec.name, "component": "worker"})]
    if spec.web is not None:
        webs = [f"{host}:{contract.WEB_METRICS_PORT}" for host in hosts]
        jobs.append(_job(web_job(spec), contract.METRICS_PATH, webs, {"workload": spec.name, "component": "web"}))
    port = spec.systemd.node_exporter_port
    if port is not None:
        nodes = [f"{host}:{port}" for host in hosts]
        jobs.append(_job(node_job(spec), "/metrics", nodes, {"workload": spec.name, "component": "node"}))
    return {"scrape_configs": jobs}


def rules(spec: WorkloadSpec) -> dict[str, Any]:
    """`rule_files:` content for Prometheus on a VM (or wherever it runs): the shared alert rules."""
    return rule_groups(spec, timing(spec), selectors(spec))


def prometheus_files(spec: WorkloadSpec) -> list[tuple[str, dict[str, Any]]]:
    """(path under the rendered folder, YAML document)."""
    return [(SCRAPE_CONFIGS_FILE, scrape_configs(spec)), (RULES_FILE, rules(spec))]


DASHBOARD_SCOPE = "systemd"
"""The dashboard's scope (title, uid): the same whatever hosts come and go."""


def grafana_dashboard(spec: WorkloadSpec) -> str:
    return dashboard_json(spec, selectors(spec), DASHBOARD_SCOPE)
