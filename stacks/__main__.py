"""The killsafe Pulumi program: `pulumi up -s <stack>` deploys the workload in stacks/Pulumi.<stack>.yaml.

The stack's `killsafe:` config is validated by the same `parse_stack_config` the CLI uses, before
anything is created; an invalid config stops the program with the path-qualified errors and no
traceback (`pulumi.RunError`). A misspelt `killsafe:` key is an error too: a silently ignored
`render_yaml_to_directory` typo would deploy to the real cluster.

What is deployed is the target's own business: `killsafe.<target>.program.deploy(stack)` (see
killsafe.targets); only that target's SDK is imported (a Kubernetes stack never imports pulumi_aws).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pulumi

from killsafe.config import NAMESPACE, ConfigError, parse_stack_config
from killsafe.spec import StackConfig


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


def main() -> None:
    stack = load()
    try:
        program = importlib.import_module(f"killsafe.{stack.target}.program")
    except ModuleNotFoundError as err:
        if err.name is None or not f"killsafe.{stack.target}.program".startswith(err.name):
            raise
        raise pulumi.RunError(
            f"{stack_source()}: {NAMESPACE}:target: {stack.target} is not implemented in the Pulumi program "
            f"yet; set {NAMESPACE}:target: kubernetes"
        ) from None
    program.deploy(stack)


main()
