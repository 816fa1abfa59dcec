"""NetworkPolicies: default-deny for every pod of the workload, then exactly the flows it needs.

    web     <- anyone on the web port;          -> DNS, Redis
    worker  <- anyone on the health port only   -> DNS, Redis
              (kubelet probes and metrics scraping; workers serve nothing else)
    redis   <- this workload's web and worker pods on 6379 (and, when enabled, the KEDA operator's
              namespace and the redis_exporter: `redis_access.py`);  -> nothing

DNS is allowed to port 53 on any address rather than to kube-dns pods by label: NodeLocal DNSCache
and managed clusters answer from link-local or host-network addresses no pod selector matches.
External Redis has an address killsafe never sees (it is inside a Secret), so egress to it is
allowed by port on any address (`kubernetes.external_redis_ports`).
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.kubernetes.labels import (
    COMPONENT,
    INSTANCE,
    NAME,
    app_pod_selector,
    common_labels,
    object_meta,
    selector_labels,
)
from killsafe.kubernetes.redis_access import extra_redis_ingress
from killsafe.spec import WorkloadSpec

DNS_PORT = 53


def _policy(spec: WorkloadSpec, name: str, pod_selector: dict[str, Any], **rules: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(name, spec.kubernetes.namespace, common_labels(spec)),
        "spec": {"podSelector": pod_selector, "policyTypes": ["Ingress", "Egress"], **rules},
    }


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def dns_egress() -> dict[str, Any]:
    return {"ports": [{"protocol": "UDP", "port": DNS_PORT}, _tcp(DNS_PORT)]}


def redis_egress(spec: WorkloadSpec) -> dict[str, Any]:
    if spec.redis.mode == "in-cluster":
        return {
            "to": [{"podSelector": {"matchLabels": selector_labels(spec, "redis")}}],
            "ports": [_tcp(contract.REDIS_PORT)],
        }
    return {"ports": [_tcp(port) for port in spec.kubernetes.external_redis_ports]}


def app_egress(spec: WorkloadSpec) -> list[dict[str, Any]]:
    return [dns_egress(), redis_egress(spec)]


def default_deny(spec: WorkloadSpec) -> dict[str, Any]:
    """Selects every pod of the workload with no rules: all other traffic is denied."""
    return _policy(spec, f"{spec.name}-default-deny", {"matchLabels": app_pod_selector(spec)})


def web_policy(spec: WorkloadSpec, port: int) -> dict[str, Any]:
    return _policy(
        spec,
        f"{spec.name}-web",
        {"matchLabels": selector_labels(spec, "web")},
        ingress=[{"ports": [_tcp(port)]}],
        egress=app_egress(spec),
    )


def worker_policy(spec: WorkloadSpec) -> dict[str, Any]:
    return _policy(
        spec,
        f"{spec.name}-worker",
        {"matchLabels": selector_labels(spec, "worker")},
        ingress=[{"ports": [_tcp(spec.worker.health_port)]}],
        egress=app_egress(spec),
    )


def redis_policy(spec: WorkloadSpec) -> dict[str, Any]:
    """Only this workload's own web and worker pods reach Redis; Redis itself dials nothing."""
    clients = {
        "matchLabels": {NAME: spec.name, INSTANCE: spec.name},
        "matchExpressions": [{"key": COMPONENT, "operator": "In", "values": ["web", "worker"]}],
    }
    return _policy(
        spec,
        f"{spec.name}-redis",
        {"matchLabels": selector_labels(spec, "redis")},
        ingress=[
            {"from": [{"podSelector": clients}], "ports": [_tcp(contract.REDIS_PORT)]},
            *extra_redis_ingress(spec),
        ],
        egress=[],
    )


def network_policies(spec: WorkloadSpec) -> list[dict[str, Any]]:
    policies = [default_deny(spec)]
    if spec.web is not None:
        policies.append(web_policy(spec, spec.web.port))
    policies.append(worker_policy(spec))
    if spec.redis.mode == "in-cluster":
        policies.append(redis_policy(spec))
    return policies
