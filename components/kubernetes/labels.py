"""Kubernetes recommended labels, and the stable subset of them that selectors use.

Selectors are immutable on Deployments and StatefulSets, so they hold only what never changes for
the life of a workload (name, instance, component); `version` and `managed-by` live on objects and
pod templates only, so an image upgrade is a rolling update and never a "selector is immutable" error.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from killsafe.kubernetes.suppressions import suppressions
from killsafe.spec import WorkloadSpec

Component = Literal["web", "worker", "redis", "dashboard"]

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"
VERSION = "app.kubernetes.io/version"
MANAGER = "killsafe"

LABEL_VALUE_MAX = 63
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_PREFIX_LENGTH = 12


def image_version(image: str) -> str:
    """The label-safe version of an image reference: its tag, else a short digest.

    `ghcr.io/acme/emails:1.4.2` -> `1.4.2`; `...@sha256:abcd...` -> `sha256-abcd12345678`.
    """
    reference, _, digest = image.partition("@")
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        version = last.rsplit(":", 1)[1]
    else:
        algorithm, _, hex_digest = digest.partition(":")
        version = f"{algorithm}-{hex_digest[:_DIGEST_PREFIX_LENGTH]}"
    version = _INVALID_LABEL_CHARS.sub("-", version)[:LABEL_VALUE_MAX]
    return version.strip("-_.")


def app_name(spec: WorkloadSpec, component: Component) -> str:
    """`app.kubernetes.io/name`: what the thing is (the workload's app, or redis)."""
    return "redis" if component == "redis" else spec.name


def selector_labels(spec: WorkloadSpec, component: Component) -> dict[str, str]:
    """The immutable subset used in selectors, Services, PDBs and NetworkPolicies."""
    return {NAME: app_name(spec, component), INSTANCE: spec.name, COMPONENT: component}


def workload_labels(spec: WorkloadSpec, component: Component, image: str) -> dict[str, str]:
    """Every recommended label for an object (and its pods) that runs `image`."""
    return {
        **selector_labels(spec, component),
        PART_OF: spec.name,
        MANAGED_BY: MANAGER,
        VERSION: image_version(image),
    }


def common_labels(spec: WorkloadSpec) -> dict[str, str]:
    """Labels for objects that belong to the whole workload (ServiceAccount, NetworkPolicies)."""
    return {INSTANCE: spec.name, PART_OF: spec.name, MANAGED_BY: MANAGER}


def app_pod_selector(spec: WorkloadSpec) -> dict[str, str]:
    """Selects every pod of this workload (web, worker and redis) and nothing else."""
    return {INSTANCE: spec.name, PART_OF: spec.name}


def object_meta(
    name: str,
    namespace: str,
    labels: dict[str, str],
    *,
    image: str | None = None,
    pull_policy: str = "Always",
    network_policies: bool = True,
) -> dict[str, Any]:
    """`metadata` for a namespaced object, with its justified checkov suppressions if any.

    Objects that run pods pass the `image` they run (and how it is pulled) and whether
    NetworkPolicies guard them.
    """
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    annotations = suppressions(namespace, image, pull_policy=pull_policy, network_policies=network_policies)
    if annotations:
        meta["annotations"] = annotations
    return meta
