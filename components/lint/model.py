"""What `killsafe lint` and the policy pack check: plain objects read from files or Pulumi resources.

Each object remembers the file (or Pulumi URN) it came from, so every finding can name it. Readers
(`readers.py` for files, `killsafe.policy.resources` for Pulumi) produce these; the rules
(`rules.py`) only ever see these, which is how the linter and the pack share one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from killsafe.systemd.unitfile import Unit

MAX_JOB_KEY = "killsafe.dev/max-job-seconds"
"""Annotation (Kubernetes), tag or docker label (ECS) declaring the longest job, in seconds."""
ROLE_KEY = "killsafe.dev/role"
"""Label/annotation/tag saying what a workload is (worker, web, redis), overriding the heuristics."""
SYSTEMD_MAX_JOB_KEY = "X-Killsafe-Max-Job-Seconds"
"""The same declaration in a unit's [Unit] or [Service] section (systemd ignores X- keys)."""
SYSTEMD_ROLE_KEY = "X-Killsafe-Role"


class LintInputError(Exception):
    """A file `killsafe lint` cannot read as any object it knows (exit 2); the message names the file."""


@dataclass(frozen=True)
class KubeObject:
    """One Kubernetes object (a document of a multi-document file, or an item of a List)."""

    file: str
    doc: dict[str, Any]
    prefix: str = ""
    """Field-path prefix when the object is an item of a List (`items[2].`)."""

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", "?"))

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class TaskDefinition:
    """An ECS task definition in RegisterTaskDefinition request shape (containerDefinitions a list)."""

    file: str
    body: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    """Field-path prefix (`taskDefinition.` for a describe-task-definition output)."""

    @property
    def ref(self) -> str:
        return f"TaskDefinition/{self.body.get('family', '?')}"

    @property
    def containers(self) -> list[dict[str, Any]]:
        return [c for c in self.body.get("containerDefinitions") or [] if isinstance(c, dict)]


@dataclass(frozen=True)
class EcsService:
    """An ECS service in CreateService request shape."""

    file: str
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"Service/{self.body.get('serviceName', '?')}"


@dataclass(frozen=True)
class Ingress:
    """One ingress permission of a security group (or rule): who may reach which ports."""

    file: str
    ref: str
    path: str
    cidrs: tuple[str, ...]
    from_port: int | None
    to_port: int | None
    protocol: str = "tcp"


@dataclass(frozen=True)
class RedisSettings:
    """Redis configuration directives found somewhere (redis.conf, a parameter group)."""

    file: str
    ref: str
    path: str
    settings: dict[str, str]


@dataclass(frozen=True)
class SystemdUnit:
    """A parsed unit file; `env` is what its Environment= and known EnvironmentFile= files set."""

    file: str
    name: str
    unit: Unit
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvFile:
    """A KEY=value file a unit may name in EnvironmentFile= (matched by file name)."""

    file: str
    values: dict[str, str]


LintObject = KubeObject | TaskDefinition | EcsService | Ingress | RedisSettings | SystemdUnit | EnvFile
