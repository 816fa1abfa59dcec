"""The pulumi-policy entry point: every killsafe.policy.policies Policy as a pack policy.

Only `serve()` (called by __main__.py, which `pulumi preview --policy-pack` runs) constructs the
PolicyPack, which starts a gRPC server and blocks; importing this module does not.
"""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import Policy as PulumiPolicy

from killsafe.policy.policies import POLICIES, Policy, violation_text

PACK_NAME = "killsafe"
LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def resource_policy(policy: Policy) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        for f in policy.check(args.resource_type, args.props, args.urn):
            report(violation_text(f), None)

    return ResourceValidationPolicy(
        name=policy.name,
        description=policy.description,
        validate=validate,
        enforcement_level=LEVELS[policy.enforcement],
    )


def stack_policy(policy: Policy) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [(r.resource_type, r.props, r.urn) for r in args.resources]
        for f in policy.check_stack(resources):
            report(violation_text(f), f.file or None)

    return StackValidationPolicy(
        name=f"{policy.name}-stack",
        description=f"{policy.description}, across resources",
        validate=validate,
        enforcement_level=LEVELS[policy.enforcement],
    )


def pack_policies() -> list[PulumiPolicy]:
    return [p for policy in POLICIES for p in (resource_policy(policy), stack_policy(policy))]


def serve() -> None:
    """Run the pack (blocks; the Pulumi CLI starts this)."""
    PolicyPack(name=PACK_NAME, policies=pack_policies(), description=__doc__)
