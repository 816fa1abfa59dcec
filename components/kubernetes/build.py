"""Pure Kubernetes manifest builder: `WorkloadSpec` in, plain JSON-able dicts out (no I/O, no Pulumi).

The same list feeds the Pulumi component (`component.py`) and `killsafe render`. One file per concept:

    labels.py       recommended labels, stable selectors, object metadata
    pods.py         restricted security contexts, resources, volumes, spreading, rollout strategy
    probes.py       startup/readiness/liveness timings and minReadySeconds, derived in one place
    app_env.py      env shared by web and worker (REDIS_URL_FILE, queues, user env)
    credentials.py  the Redis Secret's name and keys, URL template, `prerequisites` for rendered YAML,
                    the checksum that rolls pods on a new password
    namespace.py    Namespace (Pod Security "restricted") and ServiceAccount
    app_pods.py     the container and Deployment shape web and worker share
    web.py          web Deployment + Service;  worker.py  worker Deployment
    dashboard.py    the job dashboard (dashboard.enabled): Deployment + ClusterIP Service, its Secret's command
    redis.py        in-cluster Redis: ConfigMap (redis.conf), Services, StatefulSet
    disruption.py   PodDisruptionBudgets;  network.py  NetworkPolicies
    suppressions.py the only justified checkov skips (tag without digest, namespace default, ...)
    monitoring.py   PodMonitors, PrometheusRule, Grafana dashboard ConfigMap (killsafe.observability)
    redis_exporter.py  optional redis_exporter Deployment + NetworkPolicy;  redis_access.py  who else reaches Redis
    autoscaling.py  KEDA ScaledObject + TriggerAuthentication (worker.autoscaling)

Objects come out dependencies first (Namespace, ServiceAccount, ConfigMap, Services, StatefulSet,
Deployments, PDBs, NetworkPolicies, then monitoring and autoscaling custom resources) so
`kubectl apply -f` of the rendered file works in one pass.
"""

from __future__ import annotations

import json
from typing import Any, cast

from killsafe.kubernetes import credentials
from killsafe.kubernetes.autoscaling import autoscaling_manifests, without_replicas
from killsafe.kubernetes.credentials import redis_in_cluster_url_template, redis_secret_name, redis_service_name
from killsafe.kubernetes.dashboard import dashboard_deployment, dashboard_prerequisites, dashboard_service
from killsafe.kubernetes.disruption import pod_disruption_budget
from killsafe.kubernetes.monitoring import monitoring_manifests
from killsafe.kubernetes.namespace import namespace, service_account, service_account_name
from killsafe.kubernetes.network import network_policies
from killsafe.kubernetes.redis import redis_config_map, redis_services, redis_stateful_set
from killsafe.kubernetes.redis_exporter import exporter_deployment, exporter_network_policy
from killsafe.kubernetes.web import web_deployment, web_name, web_service
from killsafe.kubernetes.worker import worker_deployment, worker_name
from killsafe.spec import WorkloadSpec

__all__ = [
    "build_manifests",
    "prerequisites",
    "redis_in_cluster_url_template",
    "redis_secret_name",
]

Manifest = dict[str, Any]


def prerequisites(spec: WorkloadSpec) -> list[str]:
    """What rendered YAML needs before `kubectl apply`: the Redis credentials, the dashboard's users."""
    return [*credentials.prerequisites(spec), *dashboard_prerequisites(spec)]


def build_manifests(spec: WorkloadSpec) -> list[Manifest]:
    """Every Kubernetes object of the workload, in apply order. Deterministic for a given spec."""
    in_cluster_redis = spec.redis.mode == "in-cluster"
    sa = service_account_name(spec)
    manifests: list[Manifest] = []
    if spec.kubernetes.create_namespace and spec.kubernetes.namespace != "default":
        manifests.append(namespace(spec))
    manifests.append(service_account(spec))
    if in_cluster_redis:
        manifests.append(redis_config_map(spec))
        manifests.extend(redis_services(spec))
    if spec.web is not None:
        manifests.append(web_service(spec))
    if spec.dashboard.enabled:
        manifests.append(dashboard_service(spec))
    if in_cluster_redis:
        manifests.append(redis_stateful_set(spec, sa))
    if spec.web is not None:
        manifests.append(web_deployment(spec, sa))
    worker = worker_deployment(spec, sa)
    manifests.append(without_replicas(worker) if spec.worker.autoscaling is not None else worker)
    exporter = in_cluster_redis and spec.redis.exporter.enabled
    if exporter:
        manifests.append(exporter_deployment(spec, sa))
    if spec.dashboard.enabled:
        manifests.append(dashboard_deployment(spec, sa))  # one replica: no PodDisruptionBudget (dashboard.py)
    if spec.kubernetes.pod_disruption_budgets:
        if in_cluster_redis:
            manifests.append(pod_disruption_budget(spec, "redis", redis_service_name(spec), spec.redis.image))
        if spec.web is not None:
            manifests.append(pod_disruption_budget(spec, "web", web_name(spec), spec.image))
        manifests.append(pod_disruption_budget(spec, "worker", worker_name(spec), spec.image))
    if spec.kubernetes.network_policies:
        manifests.extend(network_policies(spec))
        if exporter:
            manifests.append(exporter_network_policy(spec))
    manifests.extend(monitoring_manifests(spec))
    manifests.extend(autoscaling_manifests(spec))
    # Builders reuse label dicts: a JSON round trip gives callers independent trees (no YAML anchors,
    # safe to mutate) and proves the output is plain JSON data.
    return cast(list[Manifest], json.loads(json.dumps(manifests, allow_nan=False)))
