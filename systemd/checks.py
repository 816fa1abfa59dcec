"""The checklist rules (killsafe.checks.RULE_TITLES) over a rendered systemd folder.

They read the files as text and parse the units, so they work on the builder's output and on a
folder edited by hand. KS009 (voluntary disruptions) has no systemd counterpart: a VM's reboot is
not negotiated with its units.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.checks import Finding, RuleSet
from killsafe.spec import WorkloadSpec
from killsafe.systemd.layout import REDIS_URL_CREDENTIAL, layout
from killsafe.systemd.unitfile import SystemdFile, Unit, parse_timespan

RULES = RuleSet("systemd")

HARDENING: dict[str, str] = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}
"""Settings every service unit must have (value as rendered); the sets below are checked apart."""
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")


def _file(files: list[SystemdFile], name: str) -> SystemdFile | None:
    return next((f for f in files if f.name == name), None)


def _services(files: list[SystemdFile]) -> list[SystemdFile]:
    return [f for f in files if f.is_unit and f.name.endswith(".service")]


def _unit(files: list[SystemdFile], name: str) -> Unit | None:
    found = _file(files, name)
    return found.unit if found is not None else None


def _env_file(files: list[SystemdFile], name: str) -> dict[str, str]:
    found = _file(files, name)
    env: dict[str, str] = {}
    for line in (found.text if found else "").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            env[key.strip()] = value.strip().strip('"')
    return env


@RULES.rule("KS001")
def _stop_budget(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    budget = shutdown_budget(spec.worker)
    name = layout(spec).worker_template
    unit = _unit(files, name)
    if unit is None:
        yield Finding("KS001", name, "no worker unit")
        return
    raw = unit.get("Service", "TimeoutStopSec") or "90s"
    stop = parse_timespan(raw)
    if stop is None or stop < budget.kill_deadline_seconds:
        yield Finding(
            "KS001",
            name,
            f"TimeoutStopSec={raw} is shorter than max_job_seconds ({budget.max_job_seconds}) + "
            f"drain_margin_seconds ({budget.drain_margin_seconds}) = {budget.kill_deadline_seconds} s: "
            "jobs would be killed mid-way on every stop",
        )
    if unit.get("Service", "KillSignal") not in (None, "SIGTERM", "TERM", "15"):
        yield Finding("KS001", name, f"KillSignal={unit.get('Service', 'KillSignal')}: the worker drains on SIGTERM")
    if unit.get("Service", "KillMode") != "mixed":
        yield Finding(
            "KS001",
            name,
            f"KillMode={unit.get('Service', 'KillMode') or 'control-group'}: SIGTERM must reach the worker "
            "alone (KillMode=mixed), or its job sandbox dies before the job finishes",
        )
    drain_raw = _env_file(files, "worker.env").get(contract.ENV_SHUTDOWN_TIMEOUT_SECONDS, "")
    if not drain_raw.isdigit():
        yield Finding(
            "KS001",
            "worker.env",
            f"no numeric {contract.ENV_SHUTDOWN_TIMEOUT_SECONDS}: the worker would not know its drain deadline",
        )
    elif stop is not None and not budget.max_job_seconds <= int(drain_raw) < stop:
        yield Finding(
            "KS001",
            "worker.env",
            f"{contract.ENV_SHUTDOWN_TIMEOUT_SECONDS}={drain_raw} must be >= max_job_seconds "
            f"({budget.max_job_seconds}) and < TimeoutStopSec ({raw})",
        )


@RULES.rule("KS002")
def _health(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    name = layout(spec).worker_template
    unit = _unit(files, name)
    if unit is None:
        return
    if unit.get("Service", "Type") != "notify":
        yield Finding("KS002", name, "Type= is not notify: start would not wait for READY=1 (readiness)")
    watchdog = parse_timespan(unit.get("Service", "WatchdogSec") or "0")
    if not watchdog:
        yield Finding("KS002", name, "no WatchdogSec=: a worker that stops consuming would never be restarted")
    if unit.get("Service", "NotifyAccess") not in (None, "main", "exec"):
        yield Finding(
            "KS002",
            name,
            f"NotifyAccess={unit.get('Service', 'NotifyAccess')}: only the worker itself may "
            "report READY=1/WATCHDOG=1 (main)",
        )
    if unit.get("Service", "Restart") != "always":
        yield Finding("KS002", name, "Restart= is not always: a killed worker would stay down")


@RULES.rule("KS003")
def _limits(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    where = layout(spec)
    for name in (where.worker_template, where.web_unit, where.dashboard_unit, where.redis_unit):
        unit = _unit(files, name)
        if unit is None:
            continue
        missing = [key for key in ("MemoryMax", "CPUQuota", "TasksMax") if not unit.get("Service", key)]
        if missing:
            yield Finding("KS003", name, f"no {', '.join(missing)}")


@RULES.rule("KS004")
def _split(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    where = layout(spec)
    worker = _unit(files, where.worker_template)
    if spec.web is not None and _unit(files, where.web_unit) is None:
        yield Finding("KS004", where.web_unit, "the spec has a web tier but there is no web unit")
    if worker is not None and spec.web is not None:
        web_program = where.executable(spec.web.command)[0]
        if any(web_program in line for line in worker.values("Service", "ExecStart")):
            yield Finding("KS004", where.worker_template, "the worker unit runs the web command")
    for f in files:
        if f.name.endswith(".socket") and where.worker_template.split("@")[0] in (
            f.unit.get("Socket", "Service") or f.name
        ):
            yield Finding("KS004", f.name, "a socket routes traffic to workers: workers take no traffic")


@RULES.rule("KS005")
def _hardening(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    for f in _services(files):
        service = f.unit.sections.get("Service", {})
        problems = [
            f"{key}={f.unit.get('Service', key) or '(unset)'}"
            for key, wanted in HARDENING.items()
            if f.unit.get("Service", key) != wanted
        ]
        user = f.unit.get("Service", "User")
        if f.unit.get("Service", "DynamicUser") != "yes" and (user is None or user in ("root", "0")):
            problems.append("runs as root (set DynamicUser=yes or an unprivileged User=)")
        if "CapabilityBoundingSet" not in service or any(service["CapabilityBoundingSet"]):
            problems.append("capabilities are not dropped (CapabilityBoundingSet=)")
        if not f.unit.get("Service", "RestrictAddressFamilies"):
            problems.append("no RestrictAddressFamilies=")
        if "@system-service" not in f.unit.values("Service", "SystemCallFilter"):
            problems.append("no SystemCallFilter=@system-service")
        if problems:
            yield Finding("KS005", f.name, "; ".join(problems))


@RULES.rule("KS006")
def _secrets(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    credential_url = re.compile(r"rediss?://[^\s\"']*@")
    for f in files:
        if f.name == "install.sh":
            continue  # it generates the password at install time, into root-only credential files
        if credential_url.search(f.text):
            yield Finding("KS006", f.name, "carries a Redis URL with credentials")
        if f.name == "redis.conf" and re.search(r"^\s*requirepass\s", f.text, re.MULTILINE):
            yield Finding("KS006", f.name, "holds requirepass: the password belongs in the credential file")
        assignments = ([a.strip('"') for a in f.unit.values("Service", "Environment")] if f.is_unit else []) + (
            list(_env_file(files, f.name)) if f.name.endswith(".env") else []
        )
        for assignment in assignments:
            name = assignment.split("=", 1)[0].strip()
            if any(word in name.upper() for word in SECRET_WORDS) or name == contract.ENV_DASHBOARD_CREDENTIALS:
                yield Finding("KS006", f.name, f"sets {name} in plain text; use LoadCredential=")
    yield from _redis_url_from_credential(spec, files)


def _redis_url_from_credential(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    where = layout(spec)
    for name in [where.worker_template] + ([where.web_unit] if spec.web is not None else []):
        unit = _unit(files, name)
        if unit is None:
            continue
        wanted = f"{contract.ENV_REDIS_URL_FILE}=%d/{REDIS_URL_CREDENTIAL}"
        if wanted not in [a.strip('"') for a in unit.values("Service", "Environment")] or not any(
            c.startswith(f"{REDIS_URL_CREDENTIAL}:") for c in unit.values("Service", "LoadCredential")
        ):
            yield Finding(
                "KS006", name, f"the Redis URL must come from LoadCredential={REDIS_URL_CREDENTIAL}:... with {wanted}"
            )


@RULES.rule("KS007")
def _redis(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    if spec.redis.mode != "local":
        return
    conf = _file(files, "redis.conf")
    text = conf.text if conf else ""
    for directive in ("maxmemory-policy noeviction", "appendonly yes"):
        if not re.search(rf"^\s*{re.escape(directive)}\s*$", text, re.MULTILINE):
            yield Finding("KS007", "redis.conf", f"lacks '{directive}': queue keys could be evicted or lost on restart")


@RULES.rule("KS008")
def _rollout(spec: WorkloadSpec, files: list[SystemdFile]) -> Iterator[Finding]:
    where = layout(spec)
    script = _file(files, "install.sh")
    text = script.text if script else ""
    surge = f"systemctl start {where.worker_instance(where.surge_port)}"
    restarts = [f"systemctl restart {instance}" for instance in where.worker_instances]
    positions = [text.find(line) for line in [surge, *restarts]]
    if -1 in positions or positions != sorted(positions) or re.search(r"restart\s+\S*-workers\.target", text):
        yield Finding(
            "KS008",
            "install.sh",
            "must start the surge instance, then restart the worker instances one at a time (never the "
            "workers target at once)",
        )
