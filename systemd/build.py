"""The systemd target's pure builder: a workload -> the files of a rendered folder (units, environment
files, Redis config, alert script, install script, README, scrape config). No I/O, no Pulumi.

Templates live in `templates/` (jinja2, StrictUndefined: a missing value is an error, never an empty
string). Every value from the spec reaches a template through one of the `killsafe.systemd.escape`
filters, so a `%`, a quote or a `$` in a command or an environment value arrives literally.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import jinja2

from killsafe import app_env, contract
from killsafe.budget import shutdown_budget, web_budget
from killsafe.render import RenderedFile, header, to_yaml
from killsafe.spec import WorkloadSpec
from killsafe.systemd import escape
from killsafe.systemd.layout import (
    CREDENTIALS_SUBDIR,
    DASHBOARD_USERS_CREDENTIAL,
    REDIS_AUTH_CREDENTIAL,
    REDIS_URL_CREDENTIAL,
    WEBHOOK_CREDENTIAL,
    Layout,
    layout,
)
from killsafe.systemd.observability import DASHBOARD_FILE, grafana_dashboard, prometheus_files

FOLDER = "systemd"
RESTART_SECONDS = 2
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL_SECONDS = 60
"""5 starts in 60 s: a process that cannot start (bad config, broken install) ends `failed` and alerts
within ~20 s; a worker waiting out a Redis outage (30 s startup timeout per try) never gets there."""
WORKER_START_MARGIN_SECONDS = 30
"""Importing the app and registering, on top of the worker's own wait for Redis."""
ABORT_TIMEOUT_SECONDS = 10
"""After the watchdog's SIGABRT: time to print the stacks before SIGKILL (a SIGSTOPped process never does)."""
MEMORY_HIGH_PERCENT = 90
"""MemoryHigh: the kernel reclaims and throttles here before MemoryMax's OOM kill."""
TASKS_MAX = 256
REDIS_MAXMEMORY_PERCENT = 70
"""Of the Redis unit's MemoryMax; the rest covers the AOF rewrite fork's copy-on-write and buffers."""
REDIS_STOP_TIMEOUT_SECONDS = 30
DASHBOARD_STOP_TIMEOUT_SECONDS = 10
"""The dashboard stops in about 2 s (aiohttp's shutdown timeout for in-flight requests); the rest is slack."""

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("killsafe.systemd", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters.update(
    sd=escape.specifiers,
    command=escape.exec_command,
    units=escape.unit_list,
    envline=escape.environment_file_line,
    sh=shlex.quote,
)


@dataclass(frozen=True)
class Units:
    """File names, in the order they are installed and verified."""

    app_target: str
    workers_target: str
    worker: str
    web: str | None
    dashboard: str | None
    redis: str | None
    alert: str

    def all(self) -> list[str]:
        names = [self.app_target, self.workers_target, self.worker, self.web, self.dashboard, self.redis, self.alert]
        return [n for n in names if n is not None]


def units(spec: WorkloadSpec) -> Units:
    where = layout(spec)
    return Units(
        app_target=where.app_target,
        workers_target=where.workers_target,
        worker=where.worker_template,
        web=where.web_unit if spec.web is not None else None,
        dashboard=where.dashboard_unit if spec.dashboard.enabled else None,
        redis=where.redis_unit if spec.redis.mode == "local" else None,
        alert=where.alert_template,
    )


def redis_maxmemory_mib(spec: WorkloadSpec) -> int:
    return spec.redis.memory_mib * REDIS_MAXMEMORY_PERCENT // 100


def local_redis_address(spec: WorkloadSpec) -> str:
    """host:port clients on this host use: the first bind address (loopback for a wildcard)."""
    first = spec.systemd.redis_bind[0].lstrip("-")
    host = "127.0.0.1" if first in ("*", "0.0.0.0") else "::1" if first in ("::", "::*") else first
    return f"[{host}]:{spec.systemd.redis_port}" if ":" in host else f"{host}:{spec.systemd.redis_port}"


REDIS_URL_FILE = f"%d/{REDIS_URL_CREDENTIAL}"
"""`%d` is the unit's credentials directory: systemd expands it to a real path before the worker runs."""
DASHBOARD_USERS_FILE = f"%d/{DASHBOARD_USERS_CREDENTIAL}"
UNIT_ENVIRONMENT = (contract.ENV_REDIS_URL_FILE, contract.ENV_HEALTH_PORT, contract.ENV_DASHBOARD_CREDENTIALS_FILE)
"""Variables whose value is a specifier: set with Environment= in the unit (an EnvironmentFile is not
expanded, and its values would override Environment=)."""


def _split(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(Environment= of the unit, EnvironmentFile= lines)."""
    unit = {name: env[name] for name in UNIT_ENVIRONMENT if name in env}
    return unit, {name: value for name, value in env.items() if name not in unit}


def worker_environment(spec: WorkloadSpec) -> tuple[dict[str, str], dict[str, str]]:
    """The worker's env from app_env; each instance's health port is its instance name (`%i`)."""
    env = app_env.worker_env(spec, redis_url_file=REDIS_URL_FILE)
    env[contract.ENV_HEALTH_PORT] = "%i"
    return _split(env)


def web_environment(spec: WorkloadSpec) -> tuple[dict[str, str], dict[str, str]]:
    return _split(app_env.web_env(spec, redis_url_file=REDIS_URL_FILE, metrics_port=contract.WEB_METRICS_PORT))


def dashboard_bind(spec: WorkloadSpec) -> list[str]:
    """Loopback (IPv4) unless dashboard.bind says otherwise: never every address by default, and no `::1`
    a host without IPv6 could not bind."""
    return list(spec.dashboard.bind if spec.dashboard.bind is not None else contract.DEFAULT_DASHBOARD_VM_BIND)


def dashboard_users_file(spec: WorkloadSpec) -> str | None:
    """Host file with the basic-auth users (dashboard.auth.credentials_secret.name); None: trusted-header."""
    secret = app_env.dashboard_auth(spec).credentials_secret
    return secret.name if secret is not None else None


def dashboard_environment(spec: WorkloadSpec) -> tuple[dict[str, str], dict[str, str]]:
    users = DASHBOARD_USERS_FILE if dashboard_users_file(spec) is not None else None
    env = app_env.dashboard_env(spec, REDIS_URL_FILE, users, default_bind=dashboard_bind(spec))
    return _split(env)


def rollout_commands(spec: WorkloadSpec) -> list[str]:
    """Start, or roll to new files, without ever running fewer than worker.replicas workers.

    `systemctl restart` of a Type=notify unit returns once the old process drained and the new one
    sent READY=1, so one instance at a time is restarted while the surge instance covers for it.
    The same commands end install.sh and are what SystemdWorkload runs over SSH.
    """
    where = layout(spec)
    surge = where.worker_instance(where.surge_port)
    steps: list[str] = []
    if spec.redis.mode == "local":
        steps.append(f"systemctl start {where.redis_unit}")
    steps.append(f"systemctl start {surge}")
    steps += [f"systemctl restart {instance}" for instance in where.worker_instances]
    steps.append(f"systemctl stop {surge}")
    if spec.web is not None:
        steps.append(f"systemctl restart {where.web_unit}")
    if spec.dashboard.enabled:
        steps.append(f"systemctl restart {where.dashboard_unit}")
    steps.append(f"systemctl start {where.app_target}")
    steps.append(stop_extra_instances_command(where))
    return steps


def stop_extra_instances_command(where: Layout) -> str:
    """Instances beyond worker.replicas (after scaling down) are stopped; they drain first."""
    wanted = " ".join(where.worker_instances)
    return (
        f"for unit in $(systemctl list-units --plain --no-legend --state=active "
        f"'{where.name}-worker@*.service' | cut -d' ' -f1); do "
        f'case " {wanted} " in *" $unit "*) ;; *) systemctl stop "$unit" ;; esac; done'
    )


def _cpu_quota(millicores: int) -> int:
    return max(1, math.ceil(millicores / 10))


def _context(spec: WorkloadSpec, source: str, comment: str = "#") -> dict[str, Any]:
    where = layout(spec)
    names = units(spec)
    after = ["network-online.target", *spec.systemd.after]
    if names.redis is not None:
        after.insert(1, names.redis)
    app_units = [u for u in (names.redis, names.web, names.dashboard, names.workers_target) if u is not None]
    config_files = [("env/worker.env", where.config_path("worker.env")), ("alert.sh", where.config_path("alert.sh"))]
    if spec.web is not None:
        config_files.insert(1, ("env/web.env", where.config_path("web.env")))
    if names.dashboard is not None:
        config_files.append(("env/dashboard.env", where.config_path("dashboard.env")))
    if names.redis is not None:
        config_files.append(("redis/redis.conf", where.config_path("redis.conf")))
    worker_command = where.executable(spec.worker.command)
    needs = [(worker_command[0], f"install the app into {where.venv} first (see README.md)")]
    if spec.web is not None:
        needs.append((where.executable(spec.web.command)[0], f"install the app into {where.venv} first"))
    dashboard = spec.dashboard.enabled
    if dashboard:
        needs.append((where.executable(spec.dashboard.command)[0], f"install the app into {where.venv} first"))
    if names.redis is not None:
        needs.append((spec.systemd.redis_server, "install Redis >= 7 (Debian: apt-get install redis-server)"))
    if spec.systemd.alert_webhook_file is not None:
        needs.append(("/usr/bin/curl", "the alert unit posts with curl (Debian: apt-get install curl)"))
    worker_unit_env, worker_file_env = worker_environment(spec)
    web_unit_env, web_file_env = web_environment(spec) if spec.web is not None else ({}, {})
    dashboard_unit_env, dashboard_file_env = dashboard_environment(spec) if dashboard else ({}, {})
    return {
        "worker_unit_env": worker_unit_env,
        "worker_file_env": worker_file_env,
        "web_unit_env": web_unit_env,
        "web_file_env": web_file_env,
        "dashboard_unit_env": dashboard_unit_env,
        "dashboard_file_env": dashboard_file_env,
        "dashboard": dashboard,
        "dashboard_auth_mode": spec.dashboard.auth.mode if dashboard and spec.dashboard.auth else None,
        "dashboard_bind": dashboard_bind(spec),
        "dashboard_users_file": dashboard_users_file(spec) if dashboard else None,
        "dashboard_users_credential": DASHBOARD_USERS_CREDENTIAL,
        "dashboard_command": where.executable(spec.dashboard.command) if dashboard else None,
        "dashboard_stop_timeout": DASHBOARD_STOP_TIMEOUT_SECONDS,
        "dashboard_start_timeout": contract.DEFAULT_STARTUP_TIMEOUT_SECONDS + WORKER_START_MARGIN_SECONDS,
        "dashboard_memory_high": spec.dashboard.memory_mib * MEMORY_HIGH_PERCENT // 100,
        "dashboard_cpu_quota": _cpu_quota(spec.dashboard.cpu_millicores),
        "header": header(source, comment).rstrip("\n"),
        "source": source,
        "spec": spec,
        "layout": where,
        "after": after,
        "app_units": app_units,
        "budget": shutdown_budget(spec.worker),
        "web_budget": web_budget(spec.web) if spec.web is not None else None,
        "balancer": spec.systemd.load_balancer if spec.web is not None else None,
        "user": spec.systemd.user,
        "address_families": "AF_INET AF_INET6 AF_UNIX",
        "credential": REDIS_URL_CREDENTIAL,
        "credentials_subdir": CREDENTIALS_SUBDIR,
        "redis_auth_credential": REDIS_AUTH_CREDENTIAL,
        "webhook": spec.systemd.alert_webhook_file is not None,
        "webhook_credential": WEBHOOK_CREDENTIAL,
        "local_redis": names.redis is not None,
        "local_redis_address": local_redis_address(spec),
        "redis_command": [spec.systemd.redis_server, where.config_path("redis.conf")],
        "redis_maxmemory_mib": redis_maxmemory_mib(spec),
        "redis_maxmemory_percent": REDIS_MAXMEMORY_PERCENT,
        "redis_stop_timeout": REDIS_STOP_TIMEOUT_SECONDS,
        "redis_cpu_quota": _cpu_quota(spec.redis.cpu_millicores),
        "worker_command": worker_command,
        "web_command": where.executable(spec.web.command) if spec.web is not None else None,
        "start_timeout": contract.DEFAULT_STARTUP_TIMEOUT_SECONDS + WORKER_START_MARGIN_SECONDS,
        "abort_timeout": ABORT_TIMEOUT_SECONDS,
        "restart_seconds": RESTART_SECONDS,
        "start_limit_burst": START_LIMIT_BURST,
        "start_limit_interval": START_LIMIT_INTERVAL_SECONDS,
        "worker_memory_high": spec.worker.memory_mib * MEMORY_HIGH_PERCENT // 100,
        "web_memory_high": spec.web.memory_mib * MEMORY_HIGH_PERCENT // 100 if spec.web is not None else None,
        "worker_cpu_quota": _cpu_quota(spec.worker.cpu_millicores),
        "web_cpu_quota": _cpu_quota(spec.web.cpu_millicores) if spec.web is not None else None,
        "tasks_max": TASKS_MAX,
        "units": names.all(),
        "config_files": config_files,
        "installed": [*(("units/" + u, f"{where.unit_dir}/{u}") for u in names.all()), *config_files],
        "needs": needs,
        "commands_needed": " and ".join(f"`{path}`" for path, _ in needs[: 2 if spec.web is not None else 1]),
        "rollout": rollout_commands(spec),
        "redis_maxmemory": redis_maxmemory_mib(spec),
    }


def _render(template: str, context: dict[str, Any], **extra: Any) -> str:
    return _ENV.get_template(template).render(**context, **extra)


def build_files(spec: WorkloadSpec, source: str) -> list[RenderedFile]:
    """Every file of the rendered folder, paths relative to the output directory (`systemd/...`)."""
    context = _context(spec, source)
    names = units(spec)
    root = PurePosixPath(FOLDER)
    files = [
        RenderedFile(root / "units" / names.app_target, _render("app.target.j2", context)),
        RenderedFile(root / "units" / names.workers_target, _render("workers.target.j2", context)),
        RenderedFile(root / "units" / names.worker, _render("worker@.service.j2", context)),
    ]
    if names.web is not None:
        files.append(RenderedFile(root / "units" / names.web, _render("web.service.j2", context)))
    if names.redis is not None:
        files.append(RenderedFile(root / "units" / names.redis, _render("redis.service.j2", context)))
        files.append(RenderedFile(root / "redis" / "redis.conf", _render("redis.conf.j2", context)))
    files.append(RenderedFile(root / "units" / names.alert, _render("alert@.service.j2", context)))
    files.append(RenderedFile(root / "alert.sh", _render("alert.sh.j2", context)))
    files.append(
        RenderedFile(
            root / "env" / "worker.env", _render("env.j2", context, tier="worker", env=context["worker_file_env"])
        )
    )
    if spec.web is not None:
        files.append(
            RenderedFile(root / "env" / "web.env", _render("env.j2", context, tier="web", env=context["web_file_env"]))
        )
    if names.dashboard is not None:
        files.append(RenderedFile(root / "units" / names.dashboard, _render("dashboard.service.j2", context)))
        env = _render("env.j2", context, tier="dashboard", env=context["dashboard_file_env"])
        files.append(RenderedFile(root / "env" / "dashboard.env", env))
    files.append(RenderedFile(root / "install.sh", _render("install.sh.j2", context), mode=0o755))
    readme_header = "<!-- " + header(source).removeprefix("# ").rstrip("\n") + " -->"
    files.append(RenderedFile(root / "README.md", _render("README.md.j2", {**context, "header": readme_header})))
    files += [
        RenderedFile(root / path, header(source) + to_yaml(document)) for path, document in prometheus_files(spec)
    ]
    files.append(RenderedFile(root / DASHBOARD_FILE, grafana_dashboard(spec)))  # JSON: no comment header
    return files


def prerequisites(spec: WorkloadSpec) -> list[str]:
    """What to do once on each host before install.sh (the Redis URL never passes through killsafe)."""
    where = layout(spec)
    steps = [
        f"Install the app into {where.venv} on each host (python3 -m venv {where.venv} && "
        f"{where.venv}/bin/pip install <your app or killsafe-worker>)",
    ]
    if spec.redis.mode == "local":
        steps.append("Install Redis >= 7 (Debian: apt-get install redis-server); install.sh generates its password")
    else:
        steps.append(
            f"On each host, put the Redis URL (redis:// or rediss://) into {where.redis_url_file} "
            f"(root, mode 0600): install -m 0600 /dev/stdin {where.redis_url_file}"
        )
    if spec.systemd.alert_webhook_file is not None:
        steps.append(f"Put the alert webhook URL into {spec.systemd.alert_webhook_file} (root, mode 0600)")
    users = dashboard_users_file(spec) if spec.dashboard.enabled else None
    if users is not None:
        steps.append(
            f"Put the dashboard's users into {users} (root, mode 0600): one line per person, each printed by "
            f"`{where.venv}/bin/{contract.DASHBOARD_COMMAND} hash-password --user NAME --role viewer|operator` "
            "(it reads the password from stdin)"
        )
    steps.append("Copy the rendered systemd/ folder to the host and run ./install.sh as root")
    return steps
