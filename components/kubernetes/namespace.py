"""The Namespace (Pod Security Standards "restricted", enforced) and the workload's ServiceAccount."""

from __future__ import annotations

from typing import Any

from killsafe.kubernetes.labels import common_labels, object_meta
from killsafe.spec import WorkloadSpec

POD_SECURITY_LEVEL = "restricted"


def namespace(spec: WorkloadSpec) -> dict[str, Any]:
    """Enforce (and audit and warn on) "restricted" so a later hand-edited pod cannot loosen it."""
    labels = {
        **common_labels(spec),
        "pod-security.kubernetes.io/enforce": POD_SECURITY_LEVEL,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/audit": POD_SECURITY_LEVEL,
        "pod-security.kubernetes.io/warn": POD_SECURITY_LEVEL,
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.kubernetes.namespace, "labels": labels},
    }


def service_account_name(spec: WorkloadSpec) -> str:
    return spec.name


def service_account(spec: WorkloadSpec) -> dict[str, Any]:
    """Its own identity (not `default`) with no API token: none of the pods talks to the API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(service_account_name(spec), spec.kubernetes.namespace, common_labels(spec)),
        "automountServiceAccountToken": False,
    }
