"""The deployment targets, treated alike by the CLI, the stack program and the tests.

A target is one package `killsafe.<target>` with the same parts: a pure builder, a Pulumi component,
`target.py` (render to files, the objects `check` inspects, reading rendered files back, the
prerequisites to print) and `program.py` (what `pulumi up` deploys for a stack). `target.py` must not
import Pulumi or any cloud SDK: `killsafe render` and `killsafe check` never pay for, or depend on,
the engine, and a Kubernetes-only user never imports pulumi_aws.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from killsafe.checks import Finding, RuleSet
from killsafe.render import RenderedFile, RenderError
from killsafe.spec import TARGETS, StackConfig


@dataclass(frozen=True)
class Target:
    """What the CLI needs from a target; every callable is pure except `read_rendered`."""

    name: str
    render: Callable[[StackConfig, str], list[RenderedFile]]
    """The stack's files under `<name>/`, as `killsafe render` writes them (source: the stack file)."""
    objects: Callable[[StackConfig], list[Any]]
    """What the checklist rules inspect: exactly what the component creates."""
    read_rendered: Callable[[Path], list[Any]]
    """The same objects read back from a rendered folder (which may have been edited by hand)."""
    rules: RuleSet
    prerequisites: Callable[[StackConfig], list[str]]
    """Steps to run once before applying rendered files (e.g. creating a credential), as text."""
    kill_deadline_name: str
    """What the platform calls the worker's kill deadline (for the printed plan)."""


MODULES: dict[str, str] = {name: f"killsafe.{name}.target" for name in TARGETS}


def implemented() -> list[str]:
    return [name for name in TARGETS if _find(name) is not None]


def _find(name: str) -> Target | None:
    try:
        module = importlib.import_module(MODULES[name])
    except ModuleNotFoundError as err:
        if err.name is not None and MODULES[name].startswith(err.name):
            return None
        raise
    target = getattr(module, "TARGET", None)
    return target if isinstance(target, Target) else None


def load_target(name: str) -> Target:
    """The target called `name`, or a RenderError naming the implemented ones."""
    if name not in MODULES:
        raise RenderError(f"--target {name} is not one of {', '.join(TARGETS)}")
    target = _find(name)
    if target is None:
        raise RenderError(
            f"target {name} is not implemented yet (implemented: {', '.join(implemented())}); "
            "render --target kubernetes"
        )
    return target


def check(config: StackConfig, objects: list[Any] | None = None, target: str | None = None) -> list[Finding]:
    """The stack's findings on its target (over `objects` when given, else the built objects)."""
    chosen = load_target(target or config.target)
    return chosen.rules.run(config.workload, chosen.objects(config) if objects is None else objects)
