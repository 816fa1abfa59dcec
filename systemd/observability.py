"""Prometheus for VMs: where the units' metrics are (scrape configs), over the contract's ports.

Hook for the alert rules: the rules file rendered from the shared alert definitions (the
observability package, once merged) joins `prometheus_files` here as `prometheus/rules.yml`; the
dashboard JSON joins it as `grafana/dashboard.json`. Nothing else in the target has to change: every
file returned here is rendered, pushed by SystemdWorkload and listed in the rendered README.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.spec import WorkloadSpec
from killsafe.systemd.layout import layout

SCRAPE_CONFIGS_FILE = "prometheus/scrape-configs.yml"


def scrape_configs(spec: WorkloadSpec) -> dict[str, Any]:
    """One job for the workers: every instance's health port on every host (localhost if none given)."""
    where = layout(spec)
    hosts = [host.address for host in spec.systemd.hosts] or ["localhost"]
    targets = [f"{host}:{port}" for host in hosts for port in where.worker_ports]
    return {
        "scrape_configs": [
            {
                "job_name": f"{spec.name}-worker",
                "metrics_path": contract.METRICS_PATH,
                "scrape_interval": "15s",
                "static_configs": [{"targets": targets, "labels": {"workload": spec.name, "component": "worker"}}],
            }
        ]
    }


def prometheus_files(spec: WorkloadSpec) -> list[tuple[str, dict[str, Any]]]:
    """(path under the rendered folder, YAML document)."""
    return [(SCRAPE_CONFIGS_FILE, scrape_configs(spec))]
