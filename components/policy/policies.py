"""The pack's policies as plain functions over (resource type, props): the lint rules, by code and level.

Every policy comes twice: mandatory (the rules' errors: the preview fails) and advisory (their
warnings: reported, never blocking). Per-resource policies see one resource; the stack policy sees
them all, for what needs two (a PDB against its Deployment's replicas, a Service selecting workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from killsafe.checks import RULE_TITLES, Finding
from killsafe.lint import lint_objects
from killsafe.lint.model import LintObject
from killsafe.policy.resources import objects

Enforcement = Literal["mandatory", "advisory"]


@dataclass(frozen=True)
class Policy:
    """One policy of the pack: the lint rules of `codes`, their errors or their warnings."""

    name: str
    codes: tuple[str, ...]
    enforcement: Enforcement

    @property
    def description(self) -> str:
        what = "; ".join(RULE_TITLES[c] for c in self.codes)
        return f"{what} ({'errors' if self.enforcement == 'mandatory' else 'warnings'} of {', '.join(self.codes)})"

    def _keep(self, findings: list[Finding]) -> list[Finding]:
        level = "error" if self.enforcement == "mandatory" else "warning"
        return [f for f in findings if f.rule in self.codes and f.level == level]

    def check(self, resource_type: str, props: Mapping[str, Any], urn: str = "") -> list[Finding]:
        """The violations of one resource."""
        return self._keep(lint_objects(objects(resource_type, props, urn)))

    def check_stack(self, resources: Iterable[tuple[str, Mapping[str, Any], str]]) -> list[Finding]:
        """Violations that only show across resources (each resource's own are reported by `check`)."""
        resources = list(resources)
        everything: list[LintObject] = [o for t, p, u in resources for o in objects(t, p, u)]
        alone = {f for t, p, u in resources for f in self.check(t, p, u)}
        return [f for f in self._keep(lint_objects(everything)) if f not in alone]


RULE_GROUPS: dict[str, tuple[str, ...]] = {
    "killsafe-shutdown-budget": ("KS001",),
    "killsafe-health-checks": ("KS002",),
    "killsafe-memory-limits": ("KS003",),
    "killsafe-web-worker-split": ("KS004",),
    "killsafe-redis-noeviction": ("KS007",),
    "killsafe-worker-rollout": ("KS008",),
    "killsafe-pdb-allows-eviction": ("KS010",),
    "killsafe-redis-not-public": ("KS011",),
}

POLICIES: tuple[Policy, ...] = tuple(
    Policy(name if level == "mandatory" else f"{name}-advisory", codes, level)
    for name, codes in RULE_GROUPS.items()
    for level in ("mandatory", "advisory")
)
"""Every policy of the pack; pack.py registers each as a resource policy and a stack policy."""


def violation_text(f: Finding) -> str:
    field = f" ({f.path})" if f.path else ""
    return f"{f.rule} {f.obj}{field}: {f.message}. Fix: {f.fix}"
