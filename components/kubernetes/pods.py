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

STARTUP_SLACK_SECONDS = 15
"""Interpreter start and imports, on top of the worker's own Redis wait."""
STARTUP_PERIOD_SECONDS = 5


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
    """A digest is immutable (IfNotPresent is exact); a tag can be re-pushed, so re-resolve it
    (Always) to keep every replica on the same code."""
    return "IfNotPresent" if has_digest(image) else "Always"


def http_probe(port: int, path: str, *, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def http_probes(port: int) -> dict[str, Any]:
    """Startup, readiness and liveness on one port (a port implies its probes).

    The startup probe's failure budget (period x failures) covers the app's own Redis wait
    (`contract.DEFAULT_STARTUP_TIMEOUT_SECONDS`) plus start-up slack, so liveness never kills a
    process that is still allowed to be starting. Liveness is lenient (the app's /livez already
    applies the stall window); readiness is quick so a Redis outage removes the pod from endpoints.
    """
    startup_failures = math.ceil(
        (contract.DEFAULT_STARTUP_TIMEOUT_SECONDS + STARTUP_SLACK_SECONDS) / STARTUP_PERIOD_SECONDS
    )
    return {
        "startupProbe": http_probe(
            port, contract.LIVE_PATH, period=STARTUP_PERIOD_SECONDS, failures=startup_failures, timeout=3
        ),
        "readinessProbe": http_probe(port, contract.READY_PATH, period=5, failures=2, timeout=3),
        "livenessProbe": http_probe(port, contract.LIVE_PATH, period=10, failures=3),
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}


def tmp_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def secret_volume(secret_name: str, key: str, file_name: str) -> dict[str, Any]:
    """One key of a Secret as one read-only file: a pod sees only the credential it needs."""
    return {
        "name": REDIS_CREDENTIALS_VOLUME,
        "secret": {
            "secretName": secret_name,
            "items": [{"key": key, "path": file_name}],
            "defaultMode": SECRET_FILE_MODE,
            "optional": False,
        },
    }


def secret_mount() -> dict[str, Any]:
    return {"name": REDIS_CREDENTIALS_VOLUME, "mountPath": contract.SECRETS_MOUNT_DIR, "readOnly": True}


def pod_spec_base(service_account: str, grace_seconds: int) -> dict[str, Any]:
    """Fields every pod shares: its own ServiceAccount with no token, no service-link env flood."""
    return {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds,
        "securityContext": pod_security_context(),
    }


def topology_spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Prefer spreading replicas over nodes so one node drain or failure takes few of them."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
    ]


def env_list(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def rolling_update(replicas: int) -> dict[str, Any]:
    """Never drop below the desired replica count during a rollout: surge first, then retire."""
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": max(1, math.ceil(replicas / 4))},
    }
