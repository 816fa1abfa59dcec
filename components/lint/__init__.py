"""`killsafe lint`: the checklist over files killsafe did not write (Kubernetes YAML, ECS JSON, systemd units).

The same rules serve the policy pack (killsafe.policy), which reads Pulumi resources into the same
objects (killsafe.lint.model).
"""

from __future__ import annotations

from pathlib import Path

from killsafe.checks import Finding
from killsafe.lint import ecs, kubernetes, redis, systemd
from killsafe.lint.model import LintInputError, LintObject
from killsafe.lint.readers import ReadResult, read_paths
from killsafe.lint.registry import RULES, describe, run

__all__ = ["RULES", "LintInputError", "ReadResult", "describe", "lint_objects", "lint_paths"]
_REGISTERED = (ecs, kubernetes, redis, systemd)
"""Importing the rule modules registers their rules."""


def lint_objects(objects: list[LintObject]) -> list[Finding]:
    return run(objects)


def lint_paths(paths: list[Path]) -> tuple[ReadResult, list[Finding]]:
    """Read every file (folders walked) and run every rule; LintInputError on bad input."""
    read = read_paths(paths)
    return read, run(read.objects)
