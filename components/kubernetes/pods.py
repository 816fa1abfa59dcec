"""Pod-level building blocks shared by web, worker and redis: hardening, resources, probes, volumes.

Every pod meets the Pod Security Standards "restricted" profile (the namespace enforces it), so a
compromised process has no root, no capabilities, no writable image and no Kubernetes API token.
"""

from __future__ import annotations

import math
from typing import Any

from killsafe import contract
from killsafe.kubernetes.suppressions import has_digest

RUN_AS_UID = 10001
"""Numeric and above 10000 so it never maps to a host user (checkov CKV_K8S_40, PSS runAsNonRoot)."""
RUN_AS_GID = 10001

TMP_VOLUME = "tmp"
TMP_SIZE_LIMIT = "64Mi"
"""A writable /tmp (Python's tempfile, libraries) on an otherwise read-only root filesystem."""
REDIS_CREDENTIALS_VOLUME = "redis-credentials"
SECRET_FILE_MODE = 0o440
"""Owner and fsGroup may read; nobody writes."""


def pod_security_context() -> dict[str, Any]:
    """Restricted pod-level context; fsGroup makes mounted secrets and volumes readable by the UID."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_GID,
        "fsGroup": RUN_AS_GID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Restricted container-level context (repeated per container: checkov and PSS read it there)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_GID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(memory_mib: int, cpu_millicores: int) -> dict[str, Any]:
    """Requests equal to limits: the Guaranteed QoS class, so a busy worker is the last evicted
    under node memory pressure, and a memory request equal to the limit means no overcommit OOM."""
    amounts = {"cpu": f"{cpu_millicores}m", "memory": f"{memory_mib}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def image_pull_policy(image: str) -> str:
    """The workload image: a digest is immutable (IfNotPresent is exact); a tag can be re-pushed, so
    re-resolve it (Always) to keep every replica on the same code."""
    return "IfNotPresent" if has_digest(image) else "Always"


REDIS_PULL_POLICY = "IfNotPresent"
"""Redis is pinned to a patch release (a tag nobody re-pushes with other code, or a digest): a Redis
restart then never waits on, or fails with, the registry."""


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}


def tmp_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def secret_volume(secret_name: str, key: str, file_name: str, volume: str = REDIS_CREDENTIALS_VOLUME) -> dict[str, Any]:
    """One key of a Secret as one read-only file: a pod sees only the credential it needs.

    Mounted as a directory (never `subPath`), so the kubelet updates the file in place when the
    Secret changes: processes that re-read it (the Redis URL, the dashboard's users) need no restart.
    """
    return {
        "name": volume,
        "secret": {
            "secretName": secret_name,
            "items": [{"key": key, "path": file_name}],
            "defaultMode": SECRET_FILE_MODE,
            "optional": False,
        },
    }


def secret_mount(volume: str = REDIS_CREDENTIALS_VOLUME, mount_dir: str = contract.SECRETS_MOUNT_DIR) -> dict[str, Any]:
    return {"name": volume, "mountPath": mount_dir, "readOnly": True}


def pod_spec_base(service_account: str, grace_seconds: int, priority_class: str | None) -> dict[str, Any]:
    """Fields every pod shares: its own ServiceAccount with no token, no service-link env flood, and
    the PriorityClass the spec names (if any) so a preempting cluster evicts others first."""
    base: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds,
        "securityContext": pod_security_context(),
    }
    if priority_class is not None:
        base["priorityClassName"] = priority_class
    return base


SPREAD_TOPOLOGY_KEYS = ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
"""Zones first (a zone outage takes few replicas), then nodes (a drain or node failure takes few)."""


def topology_spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Prefer spreading replicas over zones and nodes, without ever blocking scheduling.

    `matchLabelKeys: [pod-template-hash]` counts only pods of the same ReplicaSet, so during a rollout
    the new pods are spread among themselves instead of being skewed by the old ones being retired.
    """
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in SPREAD_TOPOLOGY_KEYS
    ]


DUAL_STACK: dict[str, str] = {"ipFamilyPolicy": "PreferDualStack"}
"""For Services: both families on a dual-stack cluster, the only one on a single-stack (IPv4- or IPv6-
only) cluster. The families themselves are left to the cluster (no `ipFamilies`), and every server a
Service routes to listens on both (Redis `bind * -::*`, the web app on all interfaces)."""


def env_list(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def rolling_update(replicas: int) -> dict[str, Any]:
    """Never drop below the desired replica count during a rollout: surge first, then retire."""
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": max(1, math.ceil(replicas / 4))},
    }
