"""Names and install paths of everything the systemd target puts on a VM, derived once from the spec.

Worker instances are named after their health port (`emails-worker@8080.service`): each instance on
a host needs its own /readyz, /livez and /metrics port, a unit can only pass its instance name
(`%i`), and the name then says where to scrape it. Instance `health_port + replicas` is the surge
instance a rollout starts first, so restarting the others one at a time never lowers capacity.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from killsafe.spec import WorkloadSpec

CREDENTIALS_SUBDIR = "credentials"
REDIS_URL_CREDENTIAL = "redis-url"
REDIS_AUTH_CREDENTIAL = "redis-auth.conf"
"""A redis.conf fragment (`requirepass ...`) that redis-server `--include`s from its credentials."""
WEBHOOK_CREDENTIAL = "alert-webhook"
DASHBOARD_USERS_CREDENTIAL = "dashboard-users"
"""The dashboard's credential file (`name:role:argon2-hash` lines), from dashboard.auth.credentials_secret.name."""


@dataclass(frozen=True)
class Layout:
    name: str
    redis_url_file: str
    """Host file the units load the Redis URL from (generated for local Redis, yours for external)."""
    venv: str
    config_dir: str
    unit_dir: str
    health_port: int
    replicas: int

    @property
    def app_target(self) -> str:
        return f"{self.name}.target"

    @property
    def workers_target(self) -> str:
        return f"{self.name}-workers.target"

    @property
    def worker_template(self) -> str:
        return f"{self.name}-worker@.service"

    def worker_instance(self, port: int) -> str:
        return f"{self.name}-worker@{port}.service"

    @property
    def worker_ports(self) -> list[int]:
        return [self.health_port + i for i in range(self.replicas)]

    @property
    def worker_instances(self) -> list[str]:
        return [self.worker_instance(port) for port in self.worker_ports]

    @property
    def surge_port(self) -> int:
        return self.health_port + self.replicas

    @property
    def web_unit(self) -> str:
        return f"{self.name}-web.service"

    @property
    def dashboard_unit(self) -> str:
        return f"{self.name}-dashboard.service"

    @property
    def redis_unit(self) -> str:
        return f"{self.name}-redis.service"

    @property
    def alert_template(self) -> str:
        return f"{self.name}-alert@.service"

    @property
    def redis_state_directory(self) -> str:
        """Under /var/lib (StateDirectory=): owned by the unit's dynamic user, kept across restarts."""
        return f"{self.name}-redis"

    def config_path(self, *parts: str) -> str:
        return posixpath.join(self.config_dir, *parts)

    def credential_path(self, credential: str) -> str:
        return self.config_path(CREDENTIALS_SUBDIR, credential)

    def executable(self, command: list[str]) -> list[str]:
        """A command whose program is not an absolute path runs from the venv's bin/."""
        program = command[0] if command[0].startswith("/") else posixpath.join(self.venv, "bin", command[0])
        return [program, *command[1:]]


def layout(spec: WorkloadSpec) -> Layout:
    systemd = spec.systemd
    config_dir = systemd.config_dir or f"/etc/{spec.name}"
    external = spec.redis.url_secret.name if spec.redis.mode == "external" and spec.redis.url_secret else None
    return Layout(
        name=spec.name,
        redis_url_file=external or posixpath.join(config_dir, CREDENTIALS_SUBDIR, REDIS_URL_CREDENTIAL),
        venv=systemd.venv or f"/opt/{spec.name}/venv",
        config_dir=config_dir,
        unit_dir=systemd.unit_dir,
        health_port=spec.worker.health_port,
        replicas=spec.worker.replicas,
    )
