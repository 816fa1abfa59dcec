"""The killsafe Pulumi program: `pulumi up -s <stack>` deploys the workload in stacks/Pulumi.<stack>.yaml.

The stack's `killsafe:` config is validated by the same `parse_stack_config` the CLI uses, before
anything is created; an invalid config stops the program with the path-qualified errors and no
traceback (`pulumi.RunError`). A misspelt `killsafe:` key is an error too: a silently ignored
`render_yaml_to_directory` typo would deploy to the real cluster.

Kubernetes target: with `killsafe:render_yaml_to_directory` set, every object is written as YAML to
that directory by an explicit provider (no cluster needed, e.g. `pulumi up -s dev`); otherwise the
ambient kubeconfig provider applies them. Rendered YAML never holds a password: pulumi-kubernetes
writes Secret values to rendered files in plain text, so in render mode the component generates no
Redis Secret and the stack exports `prerequisites`, the commands that create it (as `killsafe render`).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from killsafe.config import NAMESPACE, ConfigError, parse_stack_config
from killsafe.kubernetes import build
from killsafe.kubernetes.component import KubernetesWorkload
from killsafe.spec import StackConfig

RENDER_PROVIDER_NAME = "render-yaml"


def stack_source() -> str:
    """The stack file errors point at (Pulumi.yaml sets stackConfigDir: stacks)."""
    return f"stacks/Pulumi.{pulumi.get_stack()}.yaml"


def killsafe_config() -> dict[str, Any]:
    """Every `killsafe:` key of the stack, values decoded as written in the stack file.

    Pulumi hands structured values (the `workload` mapping) to the program as JSON text and scalars as
    plain text; unknown keys are kept so validation reports them with a "did you mean".
    """
    everything = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    raw: dict[str, Any] = {}
    for full_key, value in everything.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace == NAMESPACE and key:
            raw[key] = _decode(value)
    return raw


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def load() -> StackConfig:
    try:
        return parse_stack_config(killsafe_config(), source=stack_source())
    except ConfigError as error:
        raise pulumi.RunError(f"invalid killsafe stack configuration:\n{error}") from None


def deploy_kubernetes(stack: StackConfig) -> KubernetesWorkload:
    spec = stack.workload
    opts = None
    rendering = bool(stack.render_yaml_to_directory)
    if rendering:
        provider = k8s.Provider(RENDER_PROVIDER_NAME, render_yaml_to_directory=stack.render_yaml_to_directory)
        opts = pulumi.ResourceOptions(provider=provider)
        pulumi.export("rendered_yaml_directory", stack.render_yaml_to_directory)
        pulumi.export("prerequisites", build.prerequisites(spec))
    workload = KubernetesWorkload(spec.name, spec, opts, redis_secret=not rendering)
    pulumi.export("namespace", workload.namespace)
    pulumi.export("worker_deployment", workload.worker_deployment_name)
    pulumi.export("web_service", workload.web_service_name)
    pulumi.export("redis_secret", workload.redis_secret_name)
    pulumi.export("shutdown_budget", workload.shutdown_budget)
    return workload


def main() -> None:
    stack = load()
    if stack.target != "kubernetes":
        raise pulumi.RunError(
            f"{stack_source()}: {NAMESPACE}:target: {stack.target} is not implemented in the Pulumi program "
            f"yet (only kubernetes is; {stack.target} comes in a later release); set {NAMESPACE}:target: "
            "kubernetes"
        )
    deploy_kubernetes(stack)


main()
