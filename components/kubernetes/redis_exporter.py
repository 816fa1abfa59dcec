"""The optional redis_exporter for in-cluster Redis (`redis.exporter.enabled`): a Deployment and its
NetworkPolicy, so RedisMemoryHigh and RedisEvictionPolicyUnsafe have series to fire on.

The password never reaches env or args. redis_exporter reads passwords from a JSON file
(`-redis.password-file`, a map of Redis URL to password); an init container (the Redis image, which
has a shell) reads the mounted Secret file and writes that map, with `printf` (a shell builtin, so no
argv), into a memory-backed emptyDir only this pod mounts. The exporter then reads it at start.
`-include-config-metrics` exports `maxmemory-policy` (passwords in the config are redacted by the
exporter's default `-redact-config-metrics`).
"""

from __future__ import annotations

import posixpath
from typing import Any

from killsafe import contract
from killsafe.kubernetes import pods, probes
from killsafe.kubernetes.credentials import redis_host, redis_secret_name
from killsafe.kubernetes.labels import object_meta
from killsafe.kubernetes.network import dns_egress, redis_egress
from killsafe.kubernetes.redis_access import exporter_labels, exporter_selector, namespace_peer
from killsafe.spec import WorkloadSpec

PORT = 9121
PORT_NAME = "metrics"
PASSWORDS_DIR = "/run/redis-exporter"
PASSWORDS_FILE = posixpath.join(PASSWORDS_DIR, "passwords.json")
PASSWORDS_VOLUME = "exporter-passwords"
GRACE_SECONDS = 10


def exporter_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-redis-exporter"


def redis_address(spec: WorkloadSpec) -> str:
    """The exporter's target, exactly as written in the password map (the exporter matches it)."""
    return f"redis://{redis_host(spec)}:{contract.REDIS_PORT}"


def exporter_args(spec: WorkloadSpec) -> list[str]:
    return [
        f"-redis.addr={redis_address(spec)}",
        f"-redis.password-file={PASSWORDS_FILE}",
        f"-web.listen-address=:{PORT}",
        "-include-config-metrics",
        "-log-format=json",
    ]


def password_file_script(address: str, secret_file: str, out_file: str) -> str:
    """Shell that turns the mounted password into the exporter's JSON map (refusing a password JSON
    would need escaping for: killsafe's generated ones are hex)."""
    return (
        "umask 077\n"
        f"read -r password < {secret_file}\n"
        'case "$password" in\n'
        "  *'\"'* | *'\\'* | '')\n"
        '    echo "the Redis password is empty or holds a quote or backslash; use a hex password" >&2\n'
        "    exit 1;;\n"
        "esac\n"
        f'printf \'{{"%s": "%s"}}\\n\' \'{address}\' "$password" > {out_file}\n'
    )


def _passwords_mount(read_only: bool) -> dict[str, Any]:
    return {"name": PASSWORDS_VOLUME, "mountPath": PASSWORDS_DIR, "readOnly": read_only}


def exporter_deployment(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    exporter = spec.redis.exporter
    labels = exporter_labels(spec)
    secret_file = posixpath.join(contract.SECRETS_MOUNT_DIR, contract.REDIS_PASSWORD_SECRET_KEY)
    probe = probes.http_probe(PORT, "/health", period=10, timeout=3, failures=3)
    resources = pods.resources(exporter.memory_mib, exporter.cpu_millicores)
    init = {
        "name": "password-file",
        "image": spec.redis.image,
        "imagePullPolicy": pods.image_pull_policy(spec.redis.image),
        "command": ["sh", "-c", password_file_script(redis_address(spec), secret_file, PASSWORDS_FILE)],
        "resources": resources,
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.secret_mount(), _passwords_mount(read_only=False)],
    }
    container = {
        "name": "redis-exporter",
        "image": exporter.image,
        "imagePullPolicy": pods.image_pull_policy(exporter.image),
        "args": exporter_args(spec),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": probe,
        "resources": resources,
        "securityContext": pods.container_security_context(),
        "volumeMounts": [_passwords_mount(read_only=True)],
    }
    pod_spec = {
        **pods.pod_spec_base(service_account, GRACE_SECONDS, spec.kubernetes.priority_class_name),
        "initContainers": [init],
        "containers": [container],
        "volumes": [
            pods.secret_volume(
                redis_secret_name(spec), contract.REDIS_PASSWORD_SECRET_KEY, contract.REDIS_PASSWORD_SECRET_KEY
            ),
            {"name": PASSWORDS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(
            exporter_name(spec),
            spec.kubernetes.namespace,
            labels,
            image=exporter.image,
            network_policies=spec.kubernetes.network_policies,
        ),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": exporter_selector(spec)},
            "strategy": pods.rolling_update(1),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def exporter_network_policy(spec: WorkloadSpec) -> dict[str, Any]:
    """Only the monitoring namespace scrapes it; it dials DNS and Redis, nothing else."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(exporter_name(spec), spec.kubernetes.namespace, exporter_labels(spec)),
        "spec": {
            "podSelector": {"matchLabels": exporter_selector(spec)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [namespace_peer(spec.kubernetes.monitoring_namespace)],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
            "egress": [dns_egress(spec), redis_egress(spec)],
        },
    }
