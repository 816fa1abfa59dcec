"""NetworkPolicies: default-deny for the workload's pods, then exactly the flows the brief allows."""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.kubernetes.build import build_manifests
from tests.kubernetes.k8s_specs import find, make_spec


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """LabelSelector semantics (matchLabels + In/NotIn/Exists), to test policies against real pod labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def _pod_labels(manifests: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"]["template"]["metadata"]["labels"]
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet")
    }


def _policies_for(manifests: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == "NetworkPolicy" and _selects(m["spec"]["podSelector"], labels)]


def test_default_deny_covers_every_pod_and_denies_both_directions() -> None:
    manifests = build_manifests(make_spec())
    deny = find(manifests, "NetworkPolicy", "emails-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    pods = _pod_labels(manifests)
    assert set(pods) == {"web", "worker", "redis"}
    assert all(_selects(deny["spec"]["podSelector"], labels) for labels in pods.values())
    other_app = {**pods["worker"], "app.kubernetes.io/instance": "billing", "app.kubernetes.io/part-of": "billing"}
    assert not _policies_for(manifests, other_app)


def test_redis_reachable_only_from_this_workloads_web_and_worker() -> None:
    manifests = build_manifests(make_spec())
    policy = find(manifests, "NetworkPolicy", "emails-redis")
    pods = _pod_labels(manifests)
    assert _selects(policy["spec"]["podSelector"], pods["redis"])
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": contract.REDIS_PORT}]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # same namespace only
    assert _selects(peer["podSelector"], pods["web"]) and _selects(peer["podSelector"], pods["worker"])
    assert not _selects(peer["podSelector"], pods["redis"])
    assert not _selects(peer["podSelector"], {**pods["worker"], "app.kubernetes.io/instance": "billing"})
    assert policy["spec"]["egress"] == []


def test_worker_ingress_only_on_health_port_and_egress_only_dns_and_redis() -> None:
    manifests = build_manifests(make_spec(worker={"health_port": 9100}))
    policy = find(manifests, "NetworkPolicy", "emails-worker")
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9100}]}]
    dns, redis = policy["spec"]["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert redis["ports"] == [{"protocol": "TCP", "port": contract.REDIS_PORT}]
    [peer] = redis["to"]
    assert _selects(peer["podSelector"], _pod_labels(manifests)["redis"])


def test_web_ingress_on_its_port() -> None:
    policy = find(build_manifests(make_spec(web={"port": 8443})), "NetworkPolicy", "emails-web")
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]
    assert len(policy["spec"]["egress"]) == 2


def test_external_redis_egress_by_port_to_any_address() -> None:
    manifests = build_manifests(
        make_spec(
            redis={"mode": "external", "url_secret": {"name": "shared-redis"}},
            kubernetes={"external_redis_ports": [6380, 6379]},
        )
    )
    names = [m["metadata"]["name"] for m in manifests if m["kind"] == "NetworkPolicy"]
    assert names == ["emails-default-deny", "emails-web", "emails-worker"]
    for name in ("emails-web", "emails-worker"):
        _, redis = find(manifests, "NetworkPolicy", name)["spec"]["egress"]
        assert redis == {"ports": [{"protocol": "TCP", "port": 6380}, {"protocol": "TCP", "port": 6379}]}
