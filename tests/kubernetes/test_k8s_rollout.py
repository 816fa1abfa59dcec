"""Issue 7.9 (spreading, minReadySeconds, PriorityClass) and 7.10 (the minimum Kubernetes version)."""

from __future__ import annotations

import re

import pytest

from killsafe.config import ConfigError, parse_stack_config
from killsafe.kubernetes.build import build_manifests
from tests.kubernetes.k8s_specs import BASE, container, find, make_spec, pod_templates


def test_web_and_workers_spread_over_zones_and_nodes_per_rollout() -> None:
    manifests = build_manifests(make_spec())
    for name in ("emails-web", "emails-worker"):
        deployment = find(manifests, "Deployment", name)
        selector = deployment["spec"]["selector"]["matchLabels"]
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        for constraint in spread:
            assert constraint["labelSelector"] == {"matchLabels": selector}
            assert constraint["matchLabelKeys"] == ["pod-template-hash"]  # this rollout's pods only
            assert constraint["maxSkew"] == 1
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-zone cluster still schedules


def test_a_crash_right_after_start_stops_the_rollout() -> None:
    """minReadySeconds > 0 with maxUnavailable 0: a pod must stay ready before an old one goes."""
    manifests = build_manifests(make_spec())
    for name in ("emails-web", "emails-worker"):
        deployment = find(manifests, "Deployment", name)["spec"]
        assert deployment["minReadySeconds"] >= 10
        assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_priority_class_reaches_every_pod_only_when_named() -> None:
    named = build_manifests(make_spec(kubernetes={"priority_class_name": "queue-critical"}))
    assert {ref: pod.get("priorityClassName") for ref, pod in pod_templates(named)} == {
        "StatefulSet/emails-redis": "queue-critical",
        "Deployment/emails-web": "queue-critical",
        "Deployment/emails-worker": "queue-critical",
    }
    assert not [ref for ref, pod in pod_templates(build_manifests(make_spec())) if "priorityClassName" in pod]


def _stack(**kubernetes: object) -> dict[str, object]:
    return {"workload": {**BASE, "kubernetes": {**BASE["kubernetes"], **kubernetes}}}


def test_min_version_defaults_to_1_30_and_refuses_older_clusters_clearly() -> None:
    assert make_spec().kubernetes.min_version == "1.30"
    with pytest.raises(ConfigError) as raised:
        parse_stack_config(_stack(min_version="1.29"), "stack.yaml")
    assert str(raised.value) == (
        "stack.yaml: killsafe:workload.kubernetes.min_version: 1.29 is older than 1.30, which the web tier's "
        "preStop sleep (web.prestop_seconds: 5) needs; upgrade the cluster, or set web.prestop_seconds: 0 "
        "(no stop delay: see README, Older clusters)"
    )
    with pytest.raises(
        ConfigError, match=re.escape("1.26 is older than 1.27, the oldest Kubernetes killsafe supports")
    ):
        parse_stack_config(_stack(min_version="1.26"), "stack.yaml")
    with pytest.raises(ConfigError, match=re.escape("is not a Kubernetes MAJOR.MINOR version; write e.g. 1.30")):
        parse_stack_config(_stack(min_version="latest"), "stack.yaml")


def test_the_older_cluster_fallback_has_no_prestop_hook() -> None:
    """1.27-1.29: only without the preStop sleep (the image has no shell for an exec hook)."""
    spec = make_spec(web={"prestop_seconds": 0}, kubernetes={"min_version": "1.27"})
    web = container(build_manifests(spec), "Deployment", "emails-web")
    assert "lifecycle" not in web
    worker_only = make_spec(web=None, kubernetes={"min_version": "1.28"})
    assert worker_only.kubernetes.min_version == "1.28"
