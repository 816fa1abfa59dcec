"""killsafe: background workers you can kill at any moment, deployed from one workload description.

    from killsafe import WorkloadSpec, KubernetesWorkload
    from killsafe import EcsWorkload        # needs the extra: pip install 'killsafe[aws]'

The Pulumi components are imported lazily so the pure parts (spec, builders, CLI) never pay for,
or depend on, the Pulumi engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from killsafe.budget import ShutdownBudget, WebBudget, shutdown_budget, web_budget
from killsafe.config import ConfigError, load_stack, parse_stack_config
from killsafe.spec import StackConfig, WorkloadSpec

if TYPE_CHECKING:
    from killsafe.ecs.component import EcsWorkload
    from killsafe.kubernetes.component import KubernetesWorkload

__all__ = [
    "ConfigError",
    "EcsWorkload",
    "KubernetesWorkload",
    "ShutdownBudget",
    "StackConfig",
    "WebBudget",
    "WorkloadSpec",
    "load_stack",
    "parse_stack_config",
    "shutdown_budget",
    "web_budget",
]


def __getattr__(name: str) -> Any:
    if name == "KubernetesWorkload":
        from killsafe.kubernetes.component import KubernetesWorkload

        return KubernetesWorkload
    if name == "EcsWorkload":
        from killsafe.ecs.component import EcsWorkload

        return EcsWorkload
    raise AttributeError(f"module 'killsafe' has no attribute {name!r}")
