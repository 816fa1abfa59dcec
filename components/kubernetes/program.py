"""What `pulumi up` deploys for a stack whose target is kubernetes (called by stacks/__main__.py).

With `killsafe:render_yaml_to_directory` set, every object is written as YAML to that directory by an
explicit provider (no cluster needed, e.g. `pulumi up -s dev`); otherwise the ambient kubeconfig
provider applies them. Rendered YAML never holds a password: pulumi-kubernetes writes Secret values to
rendered files in plain text, so in render mode the component generates no Redis Secret and the stack
exports `prerequisites`, the commands that create it (as `killsafe render` prints them).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from killsafe.kubernetes import build
from killsafe.kubernetes.component import KubernetesWorkload
from killsafe.kubernetes.dashboard import dashboard_prerequisites
from killsafe.spec import StackConfig

RENDER_PROVIDER_NAME = "render-yaml"


def deploy(stack: StackConfig) -> KubernetesWorkload:
    spec = stack.workload
    opts = None
    rendering = bool(stack.render_yaml_to_directory)
    if rendering:
        provider = k8s.Provider(RENDER_PROVIDER_NAME, render_yaml_to_directory=stack.render_yaml_to_directory)
        opts = pulumi.ResourceOptions(provider=provider)
        pulumi.export("rendered_yaml_directory", stack.render_yaml_to_directory)
        pulumi.export("prerequisites", build.prerequisites(spec))
    elif dashboard_prerequisites(spec):
        # The dashboard's users are the one credential killsafe never creates, even on a cluster.
        pulumi.export("prerequisites", dashboard_prerequisites(spec))
    # Rendering touches no cluster: there is no data to protect, and a protected child would only make
    # `pulumi destroy` of the rendered files fail.
    workload = KubernetesWorkload(
        spec.name, spec, opts, redis_secret=not rendering, protect_data=False if rendering else None
    )
    pulumi.export("namespace", workload.namespace)
    pulumi.export("worker_deployment", workload.worker_deployment_name)
    pulumi.export("web_service", workload.web_service_name)
    pulumi.export("dashboard_service", workload.dashboard_service_name)
    pulumi.export("redis_secret", workload.redis_secret_name)
    pulumi.export("shutdown_budget", workload.shutdown_budget)
    return workload
