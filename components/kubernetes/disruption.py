"""PodDisruptionBudgets: node drains evict one pod of a tier at a time, never a whole tier.

`maxUnavailable: 1` rather than `minAvailable`: it protects multi-replica tiers and still lets a
drain proceed for a single replica (a budget that blocks drains forever gets deleted by operators,
and a short Redis pause is survivable: workers go not-ready and resume). Each evicted worker still
gets its full grace period to finish its jobs. Unhealthy pods may always be evicted so a crash-
looping pod never blocks a node upgrade.
"""

from __future__ import annotations

from typing import Any

from killsafe.kubernetes.labels import Component, object_meta, selector_labels, workload_labels
from killsafe.spec import WorkloadSpec


def pod_disruption_budget(spec: WorkloadSpec, component: Component, name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(name, spec.kubernetes.namespace, workload_labels(spec, component, image)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(spec, component)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
