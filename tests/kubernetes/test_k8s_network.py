"""NetworkPolicies: default-deny for the workload's pods, then exactly the flows the spec allows."""

from __future__ import annotations

from typing import Any

import pytest

from killsafe import contract
from killsafe.config import ConfigError, parse_stack_config
from killsafe.kubernetes.build import build_manifests
from killsafe.kubernetes.checks import check_kubernetes
from tests.kubernetes.k8s_specs import BASE, all_variant_manifests, find, make_spec


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


CLUSTER_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def _every_rule_names_its_peers(manifests: list[dict[str, Any]]) -> None:
    """An ingress rule without `from` (or an egress rule without `to`) admits every address."""
    for policy in (m for m in manifests if m["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: ingress from anywhere: {rule}"


def test_worker_health_port_only_from_the_monitoring_namespace() -> None:
    """Issue 7.4: the metrics port was open to every pod; now only the monitoring namespace (the
    kubelet's probes come from the node, which NetworkPolicy always allows)."""
    manifests = build_manifests(make_spec(worker={"health_port": 9100}, kubernetes={"monitoring_namespace": "obs"}))
    policy = find(manifests, "NetworkPolicy", "emails-worker")
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}}],
            "ports": [{"protocol": "TCP", "port": 9100}],
        }
    ]
    default = find(build_manifests(make_spec()), "NetworkPolicy", "emails-worker")
    assert default["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def test_dns_egress_goes_only_to_the_cluster_dns() -> None:
    """Issue 7.3: port 53 on any address let a handler tunnel data to a resolver of its choice."""
    manifests = build_manifests(make_spec())
    for name in ("emails-web", "emails-worker"):
        dns, redis = find(manifests, "NetworkPolicy", name)["spec"]["egress"]
        assert dns == {"to": [CLUSTER_DNS], "ports": DNS_PORTS}
        assert redis["ports"] == [{"protocol": "TCP", "port": contract.REDIS_PORT}]
        [peer] = redis["to"]
        assert _selects(peer["podSelector"], _pod_labels(manifests)["redis"])
    local = build_manifests(
        make_spec(kubernetes={"dns": {"cidrs": ["169.254.20.10/32", "fd00:20::10/128"], "port": 5353}})
    )
    dns = find(local, "NetworkPolicy", "emails-worker")["spec"]["egress"][0]
    assert dns["to"] == [
        CLUSTER_DNS,
        {"ipBlock": {"cidr": "169.254.20.10/32"}},
        {"ipBlock": {"cidr": "fd00:20::10/128"}},
    ]
    assert dns["ports"] == [{"protocol": "UDP", "port": 5353}, {"protocol": "TCP", "port": 5353}]


def test_egress_allow_list_reaches_only_the_tiers_it_names() -> None:
    """Issue 7.3: a handler can reach SMTP or an HTTPS API without dropping every policy."""
    manifests = build_manifests(
        make_spec(
            kubernetes={
                "egress": [
                    {"cidrs": ["0.0.0.0/0", "::/0"], "except_cidrs": ["169.254.169.254/32"], "ports": [443, 587]},
                    {"namespace": "mail", "pod_labels": {"app": "relay"}, "ports": [25], "tiers": ["web", "worker"]},
                    {"pod_labels": {"app": "stats"}, "ports": [8125], "protocol": "UDP", "tiers": ["web"]},
                ]
            }
        )
    )
    worker_extra = find(manifests, "NetworkPolicy", "emails-worker")["spec"]["egress"][2:]
    assert worker_extra == [
        {
            "to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
                {"ipBlock": {"cidr": "::/0"}},
            ],
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 587}],
        },
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mail"}},
                    "podSelector": {"matchLabels": {"app": "relay"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": 25}],
        },
    ]
    web_extra = find(manifests, "NetworkPolicy", "emails-web")["spec"]["egress"][2:]
    assert web_extra == [
        worker_extra[1],
        {"to": [{"podSelector": {"matchLabels": {"app": "stats"}}}], "ports": [{"protocol": "UDP", "port": 8125}]},
    ]
    assert len(find(build_manifests(make_spec()), "NetworkPolicy", "emails-worker")["spec"]["egress"]) == 2


WEB_METRICS_RULE = {
    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    "ports": [{"protocol": "TCP", "port": contract.WEB_METRICS_PORT}],
}


def test_web_ingress_only_from_the_configured_sources() -> None:
    """Issue 7.4: any pod in any namespace could POST /jobs; the default is the ingress controller's namespace."""
    default = find(build_manifests(make_spec(web={"port": 8443})), "NetworkPolicy", "emails-web")
    assert default["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "ports": [{"protocol": "TCP", "port": 8443}],
        },
        WEB_METRICS_RULE,
    ]
    chosen = find(
        build_manifests(
            make_spec(
                kubernetes={
                    "web_ingress_from": [
                        {"namespace_labels": {"team": "edge"}, "pod_labels": {"app.kubernetes.io/name": "traefik"}},
                        {"pod_labels": {"app": "producer"}},
                        {"cidrs": ["10.0.0.0/16", "fd00:10::/64"]},
                    ]
                }
            )
        ),
        "NetworkPolicy",
        "emails-web",
    )
    assert chosen["spec"]["ingress"][0]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"team": "edge"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
        },
        {"podSelector": {"matchLabels": {"app": "producer"}}},
        {"ipBlock": {"cidr": "10.0.0.0/16"}},
        {"ipBlock": {"cidr": "fd00:10::/64"}},
    ]
    closed = find(build_manifests(make_spec(kubernetes={"web_ingress_from": []})), "NetworkPolicy", "emails-web")
    # no rule for the web port at all (a rule without `from` would admit everyone); only the scrapers remain
    assert closed["spec"]["ingress"] == [WEB_METRICS_RULE]


def test_web_metrics_port_only_from_the_monitoring_namespace() -> None:
    """The web's /metrics: the scrapers' namespace only, never a `web_ingress_from` source (the ingress
    controller reaches the web port, not the metrics), and never through the web Service."""
    manifests = build_manifests(
        make_spec(kubernetes={"monitoring_namespace": "obs", "web_ingress_from": [{"namespace": "edge"}]})
    )
    web_port, metrics = find(manifests, "NetworkPolicy", "emails-web")["spec"]["ingress"]
    assert metrics == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}}],
        "ports": [{"protocol": "TCP", "port": contract.WEB_METRICS_PORT}],
    }
    assert web_port["ports"] == [{"protocol": "TCP", "port": contract.WEB_PORT}]
    service_ports = find(manifests, "Service", "emails-web")["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service_ports] == [("http", contract.WEB_PORT, "http")]


@pytest.mark.parametrize("variant", sorted(all_variant_manifests()))
def test_no_ingress_rule_admits_everyone(variant: str) -> None:
    _every_rule_names_its_peers(all_variant_manifests()[variant])


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({"cidrs": ["10.0.0.0/8"], "namespace": "x", "ports": [1]}, "cannot be combined"),
        ({"ports": [443]}, "needs cidrs or a selector"),
        ({"cidrs": ["10.0.0.1/8"], "ports": [1]}, "has host bits set"),
        ({"cidrs": ["10.0.0.0/8"], "except_cidrs": ["192.168.0.0/16"], "ports": [1]}, "lies outside every entry"),
        ({"namespace": "a", "namespace_labels": {}, "ports": [1]}, "cannot be combined with namespace"),
        ({"cidrs": ["::/0"], "ports": []}, "must not be empty"),
    ],
)
def test_bad_egress_rules_are_clear_errors(peer: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_stack_config({"workload": {**BASE, "kubernetes": {"egress": [peer]}}}, "stack.yaml")
    assert "stack.yaml: killsafe:workload.kubernetes.egress[0]" in str(raised.value)


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


@pytest.mark.parametrize("target", [contract.WEB_METRICS_PORT, "metrics"])
def test_check_finds_a_web_service_that_exposes_the_metrics_port(target: int | str) -> None:
    """A hand edit that puts the metrics port behind the web Service is a KS004 error (the built one is clean)."""
    spec = make_spec()
    manifests = build_manifests(spec)
    assert not [f for f in check_kubernetes(spec, manifests) if f.rule == "KS004"]
    find(manifests, "Service", "emails-web")["spec"]["ports"].append(
        {"name": "metrics", "port": 9000, "targetPort": target, "protocol": "TCP"}
    )
    findings = [str(f) for f in check_kubernetes(spec, manifests) if f.rule == "KS004"]
    assert findings == [
        f"KS004 Service/emails-web: exposes the web app's metrics port {contract.WEB_METRICS_PORT}: Prometheus "
        "scrapes it on the pods (PodMonitor); a Service would hand internals to whatever reaches the web"
    ], findings
