"""killsafe's own Pulumi components pass every mandatory policy of the pack (engine mocked, nothing else)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from killsafe.config import load_stack
from killsafe.policy.policies import POLICIES
from killsafe.policy.resources import objects
from killsafe.spec import HostSpec
from tests.ecs.harness import run_aws
from tests.kubernetes.test_component import STACKS, Run, run_under_mocks


def _kubernetes(stack: str) -> Callable[[], Run]:
    from killsafe.kubernetes.component import KubernetesWorkload

    spec = load_stack(stack, STACKS).workload
    return lambda: run_under_mocks(lambda: KubernetesWorkload("emails", spec))


def _ecs() -> Run:
    from killsafe.ecs.component import EcsWorkload

    spec = load_stack("ecs", STACKS).workload
    return run_aws(lambda: EcsWorkload("emails", spec))


def _systemd() -> Run:
    from killsafe.systemd.component import SystemdWorkload

    spec = load_stack("vm", STACKS).workload
    return run_under_mocks(lambda: SystemdWorkload("emails", spec, [HostSpec(address="10.0.1.12")]))


RUNS: dict[str, Callable[[], Run]] = {
    "dev": _kubernetes("dev"),
    "staging": _kubernetes("staging"),
    "prod": _kubernetes("prod"),
    "ecs": _ecs,
    "vm": _systemd,
}


@pytest.mark.parametrize("stack", list(RUNS))
def test_own_component_passes_the_mandatory_policies(stack: str) -> None:
    run = RUNS[stack]()
    assert run.error is None, run.error
    resources: list[tuple[str, dict[str, Any], str]] = [(r.type, r.inputs, r.urn) for r in run.monitor.registrations]
    read = [o for t, props, urn in resources for o in objects(t, props, urn)]
    workers = [o for o in read if "worker" in getattr(o, "ref", getattr(o, "name", ""))]
    assert workers, f"the policies saw no worker among {len(read)} objects"
    for policy in (p for p in POLICIES if p.enforcement == "mandatory"):
        found = [f for t, props, urn in resources for f in policy.check(t, props, urn)]
        found += policy.check_stack(resources)
        assert found == [], (policy.name, [str(f) for f in found])
