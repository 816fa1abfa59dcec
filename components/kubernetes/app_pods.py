"""What the web, worker and dashboard tiers share: one image, the same container shape, the same
Deployment shell and the same kind of Service.

Each tier adds only what differs (its command, env, port, probes, preStop, grace period, extra
credentials, rollout strategy), so a change to how app pods get the Redis credentials, /tmp,
spreading or rollouts is made once.

The spec's `command` has Docker CMD semantics and becomes the container's `args`: the image's
ENTRYPOINT (dumb-init in the reference image) stays PID 1, forwards SIGTERM from the first moment and
reaps orphans. Only an explicit `entrypoint` in the spec becomes `command` (replacing the ENTRYPOINT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from killsafe.kubernetes import pods
from killsafe.kubernetes.app_env import REDIS_URL_FILE_NAME
from killsafe.kubernetes.credentials import redis_secret_name, redis_url_secret_key
from killsafe.kubernetes.labels import object_meta, selector_labels, workload_labels
from killsafe.kubernetes.probes import ProbeSet
from killsafe.spec import WorkloadSpec

Tier = Literal["web", "worker", "dashboard"]


def app_container(
    spec: WorkloadSpec,
    tier: Tier,
    *,
    command: list[str],
    entrypoint: list[str] | None,
    env: dict[str, str],
    port_name: str,
    probes: ProbeSet,
    memory_mib: int,
    cpu_millicores: int,
    extra_mounts: Sequence[dict[str, Any]] = (),
    extra_ports: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The tier's container from the workload image: probes on their port, Redis URL as a mounted file.
    `extra_ports` are further named container ports (the web's metrics port), never in a Service."""
    process: dict[str, list[str]] = {"args": list(command)}
    if entrypoint is not None:
        process = {"command": list(entrypoint), **process}
    return {
        "name": tier,
        "image": spec.image,
        "imagePullPolicy": pods.image_pull_policy(spec.image),
        **process,
        "env": pods.env_list(env),
        "ports": [{"name": port_name, "containerPort": probes.port, "protocol": "TCP"}, *extra_ports],
        **probes.manifest(),
        "resources": pods.resources(memory_mib, cpu_millicores),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.secret_mount(), *extra_mounts, pods.tmp_mount()],
    }


def app_deployment(
    spec: WorkloadSpec,
    tier: Tier,
    *,
    name: str,
    container: dict[str, Any],
    replicas: int,
    grace_seconds: int,
    min_ready_seconds: int,
    service_account: str,
    extra_volumes: Sequence[dict[str, Any]] = (),
    strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Deployment that never drops capacity on rollout (a new pod counts only after minReadySeconds
    of readiness), spread across zones and nodes, with the restricted pod base. `strategy` replaces
    the surge-first rolling update (the dashboard's Recreate)."""
    selector = selector_labels(spec, tier)
    labels = workload_labels(spec, tier, spec.image)
    pod_spec = {
        **pods.pod_spec_base(service_account, grace_seconds, spec.kubernetes.priority_class_name),
        "containers": [container],
        "volumes": [
            pods.secret_volume(redis_secret_name(spec), redis_url_secret_key(spec), REDIS_URL_FILE_NAME),
            *extra_volumes,
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
            pull_policy=pods.image_pull_policy(spec.image),
            network_policies=spec.kubernetes.network_policies,
        ),
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready_seconds,
            "selector": {"matchLabels": selector},
            "strategy": strategy if strategy is not None else pods.rolling_update(replicas),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def app_service(spec: WorkloadSpec, tier: Tier, *, name: str, port_name: str, port: int) -> dict[str, Any]:
    """A ClusterIP Service on one named port, selecting this tier's pods only (stable selector labels)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(name, spec.kubernetes.namespace, workload_labels(spec, tier, spec.image)),
        "spec": {
            "type": "ClusterIP",
            **pods.DUAL_STACK,
            "selector": selector_labels(spec, tier),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
        },
    }
