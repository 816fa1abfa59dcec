"""The web Deployment and its Service: the HTTP tier that enqueues jobs.

On stop, the pod first sleeps in preStop (the image has no shell, so the kubelet's built-in sleep
action) while endpoints controllers and load balancers stop routing to it; only then does the app
get SIGTERM and drain in-flight requests. The grace period covers both plus a reserve.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.budget import web_budget
from killsafe.kubernetes import pods
from killsafe.kubernetes.app_env import REDIS_URL_FILE_NAME, shared_env, with_user_env
from killsafe.kubernetes.credentials import redis_secret_name, redis_url_secret_key
from killsafe.kubernetes.labels import object_meta, selector_labels, workload_labels
from killsafe.spec import WebSpec, WorkloadSpec

HTTP_PORT_NAME = "http"


def web_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-web"


def _web(spec: WorkloadSpec) -> WebSpec:
    if spec.web is None:
        raise ValueError(f"workload {spec.name} has no web tier; callers check spec.web first")
    return spec.web


def web_env(spec: WorkloadSpec) -> dict[str, str]:
    web = _web(spec)
    own = {
        **shared_env(spec),
        contract.ENV_WEB_PORT: str(web.port),
        contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(web_budget(web).request_drain_seconds),
    }
    return with_user_env(spec, own)


def web_deployment(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    web = _web(spec)
    budget = web_budget(web)
    selector = selector_labels(spec, "web")
    labels = workload_labels(spec, "web", spec.image)
    container: dict[str, Any] = {
        "name": "web",
        "image": spec.image,
        "imagePullPolicy": pods.image_pull_policy(spec.image),
        "command": list(web.command),
        "env": pods.env_list(web_env(spec)),
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": web.port, "protocol": "TCP"}],
        **pods.http_probes(web.port),
        "resources": pods.resources(web.memory_mib, web.cpu_millicores),
        "securityContext": pods.container_security_context(),
        "volumeMounts": [pods.secret_mount(), pods.tmp_mount()],
    }
    if budget.prestop_seconds > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": budget.prestop_seconds}}}
    pod_spec = {
        **pods.pod_spec_base(service_account, budget.kill_deadline_seconds),
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
            web_name(spec),
            spec.kubernetes.namespace,
            labels,
            image=spec.image,
            network_policies=spec.kubernetes.network_policies,
        ),
        "spec": {
            "replicas": web.replicas,
            "selector": {"matchLabels": selector},
            "strategy": pods.rolling_update(web.replicas),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def web_service(spec: WorkloadSpec) -> dict[str, Any]:
    web = _web(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(web_name(spec), spec.kubernetes.namespace, workload_labels(spec, "web", spec.image)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec, "web"),
            "ports": [{"name": HTTP_PORT_NAME, "port": web.port, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}],
        },
    }
