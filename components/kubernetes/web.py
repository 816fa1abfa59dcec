"""The web Deployment and its Service: the HTTP tier that enqueues jobs.

On stop, the pod first sleeps in preStop (the image has no shell, so the kubelet's built-in sleep
action) while endpoints controllers and load balancers stop routing to it; only then does the app
get SIGTERM and drain in-flight requests. The grace period covers both plus a reserve.

The container also declares the web app's metrics port (named `metrics`): the PodMonitor scrapes it
and the NetworkPolicy admits only the monitoring namespace to it; the Service never carries it, so
nothing that reaches the public port reaches the metrics.

The sleep action needs Kubernetes 1.30 (`kubernetes.min_version`); on 1.27-1.29 the spec accepts only
`web.prestop_seconds: 0`, which emits no hook at all (README, Older clusters).
"""

from __future__ import annotations

from typing import Any

from killsafe import contract
from killsafe.app_env import web_tier
from killsafe.budget import web_budget
from killsafe.kubernetes.app_env import web_env
from killsafe.kubernetes.app_pods import app_container, app_deployment, app_service
from killsafe.kubernetes.probes import probe_set
from killsafe.spec import WorkloadSpec

HTTP_PORT_NAME = "http"
METRICS_PORT_NAME = "metrics"
METRICS_PORT = contract.WEB_METRICS_PORT


def web_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-web"


def web_deployment(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    web = web_tier(spec)
    budget = web_budget(web)
    probes = probe_set(web.port, web.cpu_millicores)
    container = app_container(
        spec,
        "web",
        command=web.command,
        entrypoint=web.entrypoint,
        env=web_env(spec),
        port_name=HTTP_PORT_NAME,
        probes=probes,
        memory_mib=web.memory_mib,
        cpu_millicores=web.cpu_millicores,
        extra_ports=[{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
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
        min_ready_seconds=probes.min_ready_seconds,
        service_account=service_account,
    )


def web_service(spec: WorkloadSpec) -> dict[str, Any]:
    return app_service(spec, "web", name=web_name(spec), port_name=HTTP_PORT_NAME, port=web_tier(spec).port)
