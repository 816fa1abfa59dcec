"""What the web and worker tiers share: one image, the same container shape, the same Deployment shell.

Each tier adds only what differs (its command, env, port, probes' port, preStop, grace period), so a
change to how app pods get the Redis credentials, /tmp, spreading or rollouts is made once.
"""

from __future__ import annotations

from typing import Any, Literal

from killsafe.kubernetes import pods
from killsafe.kubernetes.app_env import REDIS_URL_FILE_NAME
from killsafe.kubernetes.credentials import redis_secret_name, redis_url_secret_key
from killsafe.kubernetes.labels import object_meta, selector_labels, workload_labels
from killsafe.spec import WorkloadSpec

Tier = Literal["web", "worker"]


def app_container(
    spec: WorkloadSpec,
    tier: Tier,
    *,
    command: list[str],
    env: dict[str, str],
    port_name: str,
    port: int,
    memory_mib: int,
    cpu_millicores: int,
) -> dict[str, Any]:
    """The tier's container from the workload image: probes on `port`, Redis URL as a mounted file."""
    return {
        "name": tier,
        "image": spec.image,
        "imagePullPolicy": pods.image_pull_policy(spec.image),
        "command": list(command),
        "env": pods.env_list(env),
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        **pods.http_probes(port),
        "resources": pods.resources(memory_mib, cpu_millicores),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.secret_mount(), pods.tmp_mount()],
    }


def app_deployment(
    spec: WorkloadSpec,
    tier: Tier,
    *,
    name: str,
    container: dict[str, Any],
    replicas: int,
    grace_seconds: int,
    service_account: str,
) -> dict[str, Any]:
    """A Deployment that never drops capacity on rollout, spread across nodes, with the restricted pod base."""
    selector = selector_labels(spec, tier)
    labels = workload_labels(spec, tier, spec.image)
    pod_spec = {
        **pods.pod_spec_base(service_account, grace_seconds),
        "containers": [container],
        "volumes": [
            pods.secret_volume(redis_secret_name(spec), redis_url_secret_key(spec), REDIS_URL_FILE_NAME),
            pods.tmp_volume(),
        ],
        "topologySpreadConstraints": pods.topology_spread(selector),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(
            name,
            spec.kubernetes.namespace,
            labels,
            image=spec.image,
            network_policies=spec.kubernetes.network_policies,
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": pods.rolling_update(replicas),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
