"""In-cluster Redis configured for queues: a one-replica StatefulSet with an AOF volume.

Queue safety: `appendonly yes` + `appendfsync everysec` (at most one second of writes lost on a
crash, none on a graceful stop), `maxmemory-policy noeviction` (a full Redis refuses writes instead
of silently dropping jobs) and `maxmemory` below the container limit, leaving room for the AOF
rewrite fork's copy-on-write pages and client buffers so the kernel never OOM-kills Redis first.

Password handling: the password is mounted as a file (never an env var, never in the pod spec) and
fed to redis-server on stdin (`redis-server <conf> -` reads extra config from stdin), so it is not
in the process arguments either (`ps` and /proc/<pid>/cmdline show no secret); the redis image's
shell reads the file and `exec`s redis-server so it stays PID 1 and receives SIGTERM itself (a
graceful stop fsyncs the AOF). The readiness probe reads the same file into `REDISCLI_AUTH`, an
environment variable of the short-lived redis-cli process only.

Liveness is a TCP check rather than PING: Redis answers PING with -LOADING while it replays a large
AOF, and restarting it then would restart the replay forever; readiness (PING == PONG) gates traffic.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

from killsafe import contract
from killsafe.kubernetes import pods
from killsafe.kubernetes.credentials import redis_secret_name, redis_service_name
from killsafe.kubernetes.labels import object_meta, selector_labels, workload_labels
from killsafe.spec import WorkloadSpec

CONFIG_DIR = "/etc/redis"
CONFIG_FILE = "redis.conf"
DATA_DIR = "/data"
DATA_VOLUME = "data"
CONFIG_VOLUME = "config"
PORT_NAME = "redis"
MAXMEMORY_PERCENT = 70
"""Of the container memory limit; the rest covers fork copy-on-write, buffers and fragmentation."""
REDIS_GRACE_SECONDS = 30
"""Redis stops in well under a second (fsync the AOF, close); 30 s covers a slow disk."""
CONFIG_HASH_ANNOTATION = "killsafe.io/redis-conf-sha256"
"""Changes the pod template when redis.conf changes, so a config edit rolls the pod."""


def holds_queue_data(spec: WorkloadSpec, manifest: dict[str, Any]) -> bool:
    """The objects whose deletion or replacement would delete the queue's volume (or, for the
    Namespace, everything in it, an external Redis's Secret included): the Pulumi path protects them."""
    if manifest.get("kind") == "Namespace":
        return True
    return manifest.get("kind") == "StatefulSet" and manifest["metadata"]["name"] == redis_service_name(spec)


def headless_service_name(spec: WorkloadSpec) -> str:
    return f"{redis_service_name(spec)}-headless"


def config_map_name(spec: WorkloadSpec) -> str:
    return f"{redis_service_name(spec)}-config"


def maxmemory_mib(spec: WorkloadSpec) -> int:
    return spec.redis.memory_mib * MAXMEMORY_PERCENT // 100


def redis_conf(spec: WorkloadSpec) -> str:
    lines = [
        f"port {contract.REDIS_PORT}",
        "bind * -::*",
        "protected-mode yes",
        f"dir {DATA_DIR}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"maxmemory {maxmemory_mib(spec)}mb",
        "maxmemory-policy noeviction",
    ]
    return "\n".join(lines) + "\n"


def password_file() -> str:
    return posixpath.join(contract.SECRETS_MOUNT_DIR, contract.REDIS_PASSWORD_SECRET_KEY)


def server_command() -> list[str]:
    """Start redis-server with the password on stdin (see the module docstring for why)."""
    conf = posixpath.join(CONFIG_DIR, CONFIG_FILE)
    script = f'read -r password < {password_file()}\nexec redis-server {conf} - <<EOF\nrequirepass "$password"\nEOF\n'
    return ["sh", "-c", script]


def ping_command() -> list[str]:
    script = (
        f"read -r password < {password_file()}\n"
        f'[ "$(REDISCLI_AUTH="$password" redis-cli -p {contract.REDIS_PORT} ping)" = PONG ]\n'
    )
    return ["sh", "-c", script]


def redis_config_map(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(
            config_map_name(spec), spec.kubernetes.namespace, workload_labels(spec, "redis", spec.redis.image)
        ),
        "data": {CONFIG_FILE: redis_conf(spec)},
    }


def _service(spec: WorkloadSpec, name: str, *, headless: bool) -> dict[str, Any]:
    service_spec: dict[str, Any] = {
        "type": "ClusterIP",
        **pods.DUAL_STACK,
        "selector": selector_labels(spec, "redis"),
        "ports": [{"name": PORT_NAME, "port": contract.REDIS_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
    }
    if headless:
        service_spec["clusterIP"] = "None"
        service_spec["publishNotReadyAddresses"] = True
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(name, spec.kubernetes.namespace, workload_labels(spec, "redis", spec.redis.image)),
        "spec": service_spec,
    }


def redis_services(spec: WorkloadSpec) -> list[dict[str, Any]]:
    """The client Service (in the URL) and the headless Service that governs the StatefulSet."""
    return [
        _service(spec, redis_service_name(spec), headless=False),
        _service(spec, headless_service_name(spec), headless=True),
    ]


def redis_stateful_set(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    redis = spec.redis
    labels = workload_labels(spec, "redis", redis.image)
    selector = selector_labels(spec, "redis")
    conf_hash = hashlib.sha256(redis_conf(spec).encode()).hexdigest()
    container = {
        "name": "redis",
        "image": redis.image,
        "imagePullPolicy": pods.REDIS_PULL_POLICY,
        "command": server_command(),
        "ports": [{"name": PORT_NAME, "containerPort": contract.REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "exec": {"command": ping_command()},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
            "successThreshold": 1,
        },
        "livenessProbe": {
            "tcpSocket": {"port": PORT_NAME},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
            "successThreshold": 1,
        },
        "resources": pods.resources(redis.memory_mib, redis.cpu_millicores),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            pods.secret_mount(),
            pods.tmp_mount(),
        ],
    }
    pod_spec = {
        **pods.pod_spec_base(service_account, REDIS_GRACE_SECONDS, spec.kubernetes.priority_class_name),
        "containers": [container],
        "volumes": [
            {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(spec), "defaultMode": 0o444}},
            pods.secret_volume(
                redis_secret_name(spec), contract.REDIS_PASSWORD_SECRET_KEY, contract.REDIS_PASSWORD_SECRET_KEY
            ),
            pods.tmp_volume(),
        ],
    }
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{redis.storage_gib}Gi"}},
    }
    if redis.storage_class is not None:
        claim_spec["storageClassName"] = redis.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_meta(
            redis_service_name(spec),
            spec.kubernetes.namespace,
            labels,
            image=redis.image,
            pull_policy=pods.REDIS_PULL_POLICY,
            network_policies=spec.kubernetes.network_policies,
        ),
        "spec": {
            "replicas": 1,
            "serviceName": headless_service_name(spec),
            "selector": {"matchLabels": selector},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": labels, "annotations": {CONFIG_HASH_ANNOTATION: conf_hash}},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    # volumeClaimTemplates are immutable: only labels that never change (no version).
                    "metadata": {"name": DATA_VOLUME, "labels": selector},
                    "spec": claim_spec,
                }
            ],
        },
    }
