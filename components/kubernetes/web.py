"""The web Deployment and its Service: the HTTP tier that enqueues jobs.

On stop, the pod first sleeps in preStop (the image has no shell, so the kubelet's built-in sleep
action) while endpoints controllers and load balancers stop routing to it; only then does the app
get SIGTERM and drain in-flight requests. The grace period covers both plus a reserve.
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.budget import web_budget
from killsafe.kubernetes.app_env import shared_env, with_user_env
from killsafe.kubernetes.app_pods import app_container, app_deployment
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
    container = app_container(
        spec,
        "web",
        command=web.command,
        env=web_env(spec),
        port_name=HTTP_PORT_NAME,
        port=web.port,
        memory_mib=web.memory_mib,
        cpu_millicores=web.cpu_millicores,
    )
    if budget.prestop_seconds > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": budget.prestop_seconds}}}
    return app_deployment(
        spec,
        "web",
        name=web_name(spec),
        container=container,
        replicas=web.replicas,
        grace_seconds=budget.kill_deadline_seconds,
        service_account=service_account,
    )


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
