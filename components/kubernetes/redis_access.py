"""Who besides web and worker may reach the in-cluster Redis: the KEDA operator (autoscaling reads
the queue keys) and the optional redis_exporter. The Redis NetworkPolicy appends these rules."""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.kubernetes.labels import COMPONENT, INSTANCE, MANAGED_BY, MANAGER, NAME, PART_OF, VERSION, image_version
from killsafe.spec import WorkloadSpec

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (1.21+): selects a namespace by its name."""
EXPORTER_COMPONENT = "redis-metrics"


def exporter_selector(spec: WorkloadSpec) -> dict[str, str]:
    return {NAME: "redis-exporter", INSTANCE: spec.name, COMPONENT: EXPORTER_COMPONENT}


def exporter_labels(spec: WorkloadSpec) -> dict[str, str]:
    return {
        **exporter_selector(spec),
        PART_OF: spec.name,
        MANAGED_BY: MANAGER,
        VERSION: image_version(spec.redis.exporter.image),
    }


def namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}


def extra_redis_ingress(spec: WorkloadSpec) -> list[dict[str, Any]]:
    """Ingress rules for the Redis pods beyond the workload's own web and worker."""
    port = [{"protocol": "TCP", "port": contract.REDIS_PORT}]
    rules: list[dict[str, Any]] = []
    if spec.worker.autoscaling is not None:
        rules.append({"from": [namespace_peer(spec.kubernetes.keda_namespace)], "ports": port})
    if spec.redis.exporter.enabled:
        rules.append({"from": [{"podSelector": {"matchLabels": exporter_selector(spec)}}], "ports": port})
    return rules
