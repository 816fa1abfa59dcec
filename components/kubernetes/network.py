"""NetworkPolicies: default-deny for every pod of the workload, then exactly the flows it needs.

    web     <- `kubernetes.web_ingress_from` on the web port      -> DNS, Redis, `egress` rules for web
            <- `kubernetes.monitoring_namespace` on the web metrics port (contract.WEB_METRICS_PORT)
    worker  <- `kubernetes.monitoring_namespace` on the health port -> DNS, Redis, `egress` rules for worker
              (Prometheus scrapes /metrics from there; workers serve nothing else)
    dashboard <- `dashboard.allowed_from` on the dashboard port (nobody when empty: port-forward only)
              -> DNS, Redis
    redis   <- this workload's web, worker (and dashboard) pods on 6379 (and, when enabled, the KEDA
              operator's namespace and the redis_exporter: `redis_access.py`);  -> nothing

Kubelet probes need no rule: NetworkPolicy always allows traffic between a pod and the node it runs
on (Kubernetes documents this for every conforming plugin), and the kubelet probes from that node.
So the health port is closed to every other pod and namespace without breaking liveness or readiness.

DNS goes to the cluster DNS pods only (`kubernetes.dns`: kube-system, `k8s-app: kube-dns` by default),
not to port 53 anywhere: a compromised handler cannot tunnel data out over DNS to a resolver of its
choice. Clusters that answer DNS from a node-local address (NodeLocal DNSCache) add that address to
`kubernetes.dns.cidrs`.

An empty `from` or `to` in a rule would mean "any address", so every rule here names its peers; an
empty `web_ingress_from` emits no ingress rule at all (nobody but the kubelet reaches the web port).
External Redis has an address killsafe never sees (it is inside a Secret), so egress to it is allowed
by port on any address (`kubernetes.external_redis_ports`). Peers are selectors or address blocks of
either family, so the same policies hold on IPv4, IPv6 and dual-stack clusters.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.kubernetes.labels import (
    COMPONENT,
    INSTANCE,
    NAME,
    Component,
    app_pod_selector,
    common_labels,
    object_meta,
    selector_labels,
)
from killsafe.kubernetes.redis_access import extra_redis_ingress
from killsafe.spec import EgressRule, NetworkPeer, WorkloadSpec, cidr_within

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (1.22+): selects a namespace by name."""


def _policy(spec: WorkloadSpec, name: str, pod_selector: dict[str, Any], **rules: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(name, spec.kubernetes.namespace, common_labels(spec)),
        "spec": {"podSelector": pod_selector, "policyTypes": ["Ingress", "Egress"], **rules},
    }


def _port(port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": port}


def namespace_selector(namespace: str) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}


def ip_blocks(cidrs: list[str], excluded: list[str]) -> list[dict[str, Any]]:
    """One ipBlock per CIDR, each with the excluded blocks that lie inside it (same family)."""
    blocks = []
    for cidr in cidrs:
        inside = [e for e in excluded if cidr_within(e, cidr)]
        block: dict[str, Any] = {"cidr": cidr}
        if inside:
            block["except"] = inside
        blocks.append({"ipBlock": block})
    return blocks


def peers(peer: NetworkPeer) -> list[dict[str, Any]]:
    """The NetworkPolicyPeer entries for one spec peer (the spec allows ipBlocks or selectors, not both)."""
    if peer.cidrs:
        return ip_blocks(peer.cidrs, peer.except_cidrs)
    selected: dict[str, Any] = {}
    if peer.namespace is not None:
        selected["namespaceSelector"] = namespace_selector(peer.namespace)
    elif peer.namespace_labels is not None:
        selected["namespaceSelector"] = {"matchLabels": dict(peer.namespace_labels)}
    if peer.pod_labels is not None:
        selected["podSelector"] = {"matchLabels": dict(peer.pod_labels)}
    return [selected]


def dns_egress(spec: WorkloadSpec) -> dict[str, Any]:
    dns = spec.kubernetes.dns
    cluster_dns = {
        "namespaceSelector": namespace_selector(dns.namespace),
        "podSelector": {"matchLabels": dict(dns.pod_labels)},
    }
    return {
        "to": [cluster_dns, *ip_blocks(dns.cidrs, [])],
        "ports": [_port(dns.port, "UDP"), _port(dns.port, "TCP")],
    }


def redis_egress(spec: WorkloadSpec) -> dict[str, Any]:
    if spec.redis.mode == "in-cluster":
        return {
            "to": [{"podSelector": {"matchLabels": selector_labels(spec, "redis")}}],
            "ports": [_port(contract.REDIS_PORT)],
        }
    return {"ports": [_port(port) for port in spec.kubernetes.external_redis_ports]}


def extra_egress(rule: EgressRule) -> dict[str, Any]:
    return {"to": peers(rule), "ports": [_port(port, rule.protocol) for port in rule.ports]}


def app_egress(spec: WorkloadSpec, tier: Component) -> list[dict[str, Any]]:
    extra = [extra_egress(rule) for rule in spec.kubernetes.egress if tier in rule.tiers]
    return [dns_egress(spec), redis_egress(spec), *extra]


def default_deny(spec: WorkloadSpec) -> dict[str, Any]:
    """Selects every pod of the workload with no rules: all other traffic is denied."""
    return _policy(spec, f"{spec.name}-default-deny", {"matchLabels": app_pod_selector(spec)})


def scrapers(spec: WorkloadSpec) -> dict[str, Any]:
    """Prometheus's namespace: the only peer of the worker's and the web's metrics ports."""
    return {"namespaceSelector": namespace_selector(spec.kubernetes.monitoring_namespace)}


def web_policy(spec: WorkloadSpec, port: int) -> dict[str, Any]:
    """The web port from `web_ingress_from` only; the metrics port from the monitoring namespace only
    (a `web_ingress_from` peer, the ingress controller say, never reaches the metrics)."""
    sources = [entry for peer in spec.kubernetes.web_ingress_from for entry in peers(peer)]
    ingress = [{"from": sources, "ports": [_port(port)]}] if sources else []
    ingress.append({"from": [scrapers(spec)], "ports": [_port(contract.WEB_METRICS_PORT)]})
    return _policy(
        spec,
        f"{spec.name}-web",
        {"matchLabels": selector_labels(spec, "web")},
        ingress=ingress,
        egress=app_egress(spec, "web"),
    )


def worker_policy(spec: WorkloadSpec) -> dict[str, Any]:
    return _policy(
        spec,
        f"{spec.name}-worker",
        {"matchLabels": selector_labels(spec, "worker")},
        ingress=[{"from": [scrapers(spec)], "ports": [_port(spec.worker.health_port)]}],
        egress=app_egress(spec, "worker"),
    )


def dashboard_policy(spec: WorkloadSpec) -> dict[str, Any]:
    """The dashboard port from `dashboard.allowed_from` only: address blocks (e.g. a VPN's) and whole
    namespaces (e.g. oauth2-proxy's). Nothing listed: no ingress rule, so only `kubectl port-forward`
    (the pod's loopback) reaches it. It dials DNS and Redis, nothing else."""
    access = spec.dashboard.allowed_from
    sources = [
        *ip_blocks(access.cidrs, []),
        *({"namespaceSelector": namespace_selector(namespace)} for namespace in access.kubernetes_namespaces),
    ]
    ingress = [{"from": sources, "ports": [_port(spec.dashboard.port)]}] if sources else []
    return _policy(
        spec,
        f"{spec.name}-dashboard",
        {"matchLabels": selector_labels(spec, "dashboard")},
        ingress=ingress,
        egress=[dns_egress(spec), redis_egress(spec)],
    )


def redis_policy(spec: WorkloadSpec) -> dict[str, Any]:
    """Only this workload's own web, worker and dashboard pods reach Redis; Redis itself dials nothing."""
    components = ["web", "worker", *(["dashboard"] if spec.dashboard.enabled else [])]
    clients = {
        "matchLabels": {NAME: spec.name, INSTANCE: spec.name},
        "matchExpressions": [{"key": COMPONENT, "operator": "In", "values": components}],
    }
    return _policy(
        spec,
        f"{spec.name}-redis",
        {"matchLabels": selector_labels(spec, "redis")},
        ingress=[
            {"from": [{"podSelector": clients}], "ports": [_port(contract.REDIS_PORT)]},
            *extra_redis_ingress(spec),
        ],
        egress=[],
    )


def network_policies(spec: WorkloadSpec) -> list[dict[str, Any]]:
    policies = [default_deny(spec)]
    if spec.web is not None:
        policies.append(web_policy(spec, spec.web.port))
    policies.append(worker_policy(spec))
    if spec.dashboard.enabled:
        policies.append(dashboard_policy(spec))
    if spec.redis.mode == "in-cluster":
        policies.append(redis_policy(spec))
    return policies
