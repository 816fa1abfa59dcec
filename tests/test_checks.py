"""Each checklist rule fires on the unsafe variant of the objects the builder produces, and only then."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from killsafe.checks import errors
from killsafe.config import load_stack
from killsafe.kubernetes.build import build_manifests
from killsafe.kubernetes.checks import RULES, check_kubernetes
from tests.conftest import REPO

SPEC = load_stack("staging", REPO / "stacks").workload
Manifest = dict[str, Any]


def _component(m: Manifest, name: str) -> bool:
    return bool(m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name)


def _worker(ms: list[Manifest]) -> Manifest:
    return next(m for m in ms if m["kind"] == "Deployment" and _component(m, "worker"))


def _worker_container(ms: list[Manifest]) -> dict[str, Any]:
    return dict(_worker(ms)["spec"]["template"]["spec"]["containers"][0])


def _set_env(ms: list[Manifest], name: str, value: str) -> None:
    for e in _worker(ms)["spec"]["template"]["spec"]["containers"][0]["env"]:
        if e["name"] == name:
            e["value"] = value


MUTATIONS: dict[str, tuple[str, Callable[[list[Manifest]], None]]] = {
    "short grace": (
        "KS001",
        lambda ms: _worker(ms)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
    ),
    "drain deadline past grace": ("KS001", lambda ms: _set_env(ms, "KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS", "500")),
    "no startup probe": (
        "KS002",
        lambda ms: _worker(ms)["spec"]["template"]["spec"]["containers"][0].pop("startupProbe"),
    ),
    "startup probe waits on redis": (
        "KS002",
        lambda ms: _worker(ms)["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"].update(
            path="/readyz"
        ),
    ),
    "memory too small for the jobs in flight": (
        "KS003",
        lambda ms: _set_env(ms, "KILLSAFE_CONCURRENCY_PER_QUEUE", "100"),
    ),
    "no memory limit": (
        "KS003",
        lambda ms: _worker(ms)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop("memory"),
    ),
    "service selects workers": (
        "KS004",
        lambda ms: ms.append(
            {
                "kind": "Service",
                "metadata": {"name": "oops"},
                "spec": {"selector": _worker(ms)["spec"]["template"]["metadata"]["labels"]},
            }
        ),
    ),
    "sa token mounted": (
        "KS005",
        lambda ms: _worker(ms)["spec"]["template"]["spec"].update(automountServiceAccountToken=True),
    ),
    "writable root fs": (
        "KS005",
        lambda ms: _worker(ms)["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
    ),
    "password in env": (
        "KS006",
        lambda ms: _worker(ms)["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "REDIS_URL", "value": "redis://:hunter2@emails-redis:6379/0"}
        ),
    ),
    "secret data in manifest": (
        "KS006",
        lambda ms: ms.append({"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}}),
    ),
    "evicting redis": (
        "KS007",
        lambda ms: [
            m["data"].update({k: v.replace("noeviction", "allkeys-lru") for k, v in m["data"].items()})
            for m in ms
            if m["kind"] == "ConfigMap" and _component(m, "redis")
        ],
    ),
    "rollout drops capacity": ("KS008", lambda ms: _worker(ms)["spec"].update(strategy={"type": "Recreate"})),
    "no worker pdb": (
        "KS009",
        lambda ms: [ms.remove(m) for m in list(ms) if m["kind"] == "PodDisruptionBudget" and _component(m, "worker")],
    ),
}


def test_builder_output_is_clean() -> None:
    assert check_kubernetes(SPEC, build_manifests(SPEC)) == []


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_rule_fires_on_unsafe_variant(case: str) -> None:
    rule, mutate = MUTATIONS[case]
    manifests = copy.deepcopy(build_manifests(SPEC))
    mutate(manifests)
    findings = check_kubernetes(SPEC, manifests)
    assert {f.rule for f in findings} == {rule}, findings


def test_memory_per_job_is_a_warning_not_an_error() -> None:
    manifests = copy.deepcopy(build_manifests(SPEC))
    _set_env(manifests, "KILLSAFE_CONCURRENCY_PER_QUEUE", "100")
    [finding] = check_kubernetes(SPEC, manifests)
    assert finding.level == "warning" and errors([finding]) == []


def test_every_rule_has_a_mutation() -> None:
    assert {rule for rule, _ in MUTATIONS.values()} == set(RULES.rules)


def test_rules_cover_the_issue_checklist(tmp_path: Path) -> None:
    titles = " ".join(RULES.titles().values())
    for topic in ("grace period", "probes", "limits", "separate Deployments"):
        assert topic in titles
