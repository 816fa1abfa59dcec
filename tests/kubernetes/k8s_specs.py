"""Specs and manifest helpers shared by the builder tests (no fixtures: plain functions)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from killsafe.config import load_stack
from killsafe.kubernetes.build import build_manifests
from killsafe.spec import WorkloadSpec
from tests.conftest import REPO

STACKS = ("dev", "staging", "prod")
DIGEST = "sha256:" + "ab" * 32

BASE: dict[str, Any] = {
    "name": "emails",
    "image": "ghcr.io/acme/emails:1.4.2",
    "web": {"command": ["killsafe-web"]},
    "worker": {"command": ["killsafe-worker"], "queues": ["emails"], "max_job_seconds": 120},
    "kubernetes": {"namespace": "emails-test"},
}


BASIC_DASHBOARD: dict[str, Any] = {
    "enabled": True,
    "auth": {"mode": "basic", "credentials_secret": {"name": "emails-dashboard-users", "key": "users.txt"}},
}
PROXIED_DASHBOARD: dict[str, Any] = {
    "enabled": True,
    "port": 9000,
    "auth": {
        "mode": "trusted-header",
        "user_header": "X-Forwarded-User",
        "groups_header": "X-Forwarded-Groups",
        "operators": ["group:sre"],
        "trusted_proxies": ["10.244.0.0/16", "fd00:10:244::/56"],
    },
    "allowed_from": {"kubernetes_namespaces": ["oauth2-proxy"], "cidrs": ["10.8.0.0/16", "fd00:8::/64"]},
    "never_auto_retry": ["charge"],
    "memory_mib": 320,
    "cpu_millicores": 50,
}
"""The dashboard shapes the stacks do not cover (dev has basic auth with nobody allowed in)."""


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def make_spec(**overrides: Any) -> WorkloadSpec:
    """BASE with nested overrides; a value of None replaces (e.g. web=None for worker-only)."""
    return WorkloadSpec.model_validate(_merge(BASE, overrides))


def stack_spec(stack: str) -> WorkloadSpec:
    return load_stack(stack, REPO / "stacks").workload


def variants() -> dict[str, WorkloadSpec]:
    """Every example stack plus the shapes the stacks do not cover."""
    specs = {stack: stack_spec(stack) for stack in STACKS}
    specs["external-redis"] = make_spec(
        redis={"mode": "external", "url_secret": {"name": "shared-redis", "key": "connection"}},
        worker={"autoscaling": {"max_replicas": 8}, "entrypoint": ["dumb-init", "--"]},
        alerts={"redis_metrics_selector": {"job": "redis-exporter"}},
        kubernetes={
            "external_redis_ports": [6380],
            "keda_redis_secret": {"name": "shared-redis-keda", "tls": True},
            "priority_class_name": "queue-critical",
            "web_ingress_from": [
                {"namespace_labels": {"team": "edge"}, "pod_labels": {"app.kubernetes.io/name": "traefik"}},
                {"cidrs": ["10.0.0.0/16", "fd00:10::/64"], "except_cidrs": ["10.0.9.0/24"]},
            ],
            "egress": [
                {"namespace": "mail", "pod_labels": {"app": "relay"}, "ports": [25], "tiers": ["web", "worker"]}
            ],
            "dns": {"cidrs": ["169.254.20.10/32"]},
        },
        dashboard=PROXIED_DASHBOARD,
    )
    specs["older-cluster"] = make_spec(web={"prestop_seconds": 0}, kubernetes={"min_version": "1.27"})
    specs["worker-only-default-namespace"] = make_spec(
        image=f"registry.example.com:5000/acme/emails@{DIGEST}",
        web=None,
        redis={"storage_class": "fast-ssd"},
        kubernetes={"namespace": "default"},
    )
    specs["opt-outs"] = make_spec(
        redis={"exporter": {"enabled": True}},
        kubernetes={
            "network_policies": False,
            "pod_disruption_budgets": False,
            "create_namespace": False,
            "prometheus_operator": False,
            "grafana_dashboard": False,
        },
        dashboard=BASIC_DASHBOARD,
    )
    return specs


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def kinds_and_names(manifests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in manifests]


def pod_templates(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object ref, pod spec) for every object that runs pods."""
    return [
        (f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"])
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet")
    ]


def container(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [only] = find(manifests, kind, name)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def write_per_object(manifests: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One YAML file per object (as `killsafe render` writes), for the validators."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, manifest in enumerate(manifests):
        path = directory / f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        paths.append(path)
    return paths


def all_variant_manifests() -> dict[str, list[dict[str, Any]]]:
    return {name: build_manifests(spec) for name, spec in variants().items()}
