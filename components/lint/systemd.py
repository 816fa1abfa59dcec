"""Lint rules over systemd units (services; templates `x@.service` included)."""

from __future__ import annotations

from collections.abc import Iterator

from killsafe import contract
from killsafe.checks import Finding
from killsafe.lint import roles
from killsafe.lint.budget import declared, grace_findings
from killsafe.lint.model import SYSTEMD_MAX_JOB_KEY, SYSTEMD_ROLE_KEY, LintObject, RedisSettings, SystemdUnit
from killsafe.lint.redis import command_settings, evicting_findings
from killsafe.lint.registry import finding, rule
from killsafe.systemd.unitfile import parse_timespan


def _exec(u: SystemdUnit) -> list[object]:
    return [v.lstrip("-@:+!") for v in u.unit.values("Service", "ExecStart")]


def role(u: SystemdUnit) -> roles.Role:
    declared_role = u.unit.get("Unit", SYSTEMD_ROLE_KEY) or u.unit.get("Service", SYSTEMD_ROLE_KEY)
    return roles.guess(
        labels=[{"killsafe.dev/role": declared_role}] if declared_role else [],
        commands=[_exec(u)],
        images=[],
        env_names=list(u.env),
        exposes_ports=False,
        name=u.name,
    )


def services(objects: list[LintObject]) -> Iterator[tuple[SystemdUnit, roles.Role]]:
    """Long-running services (oneshot units run to completion: no stop budget, no health)."""
    for o in objects:
        if isinstance(o, SystemdUnit) and o.name.endswith(".service") and o.unit.get("Service", "Type") != "oneshot":
            yield o, role(o)


@rule("KS001")
def stop_timeout(objects: list[LintObject]) -> Iterator[Finding]:
    for u, r in services(objects):
        worker = r in ("worker", "web+worker")
        if worker or r == "unknown":
            key = (
                "TimeoutSec"
                if u.unit.get("Service", "TimeoutSec") and not u.unit.get("Service", "TimeoutStopSec")
                else "TimeoutStopSec"
            )
            raw = u.unit.get("Service", key)
            budget = declared(
                [
                    ("[Unit]", {"killsafe.dev/max-job-seconds": u.unit.get("Unit", SYSTEMD_MAX_JOB_KEY)}),
                    ("[Service]", {"killsafe.dev/max-job-seconds": u.unit.get("Service", SYSTEMD_MAX_JOB_KEY)}),
                ],
                [u.env],
            )
            value = parse_timespan(raw) if raw else None
            yield from grace_findings(
                "systemd",
                u.file,
                u.name,
                f"[Service] {key}",
                setting="TimeoutStopSec",
                value=value,
                budget=budget,
                worker=worker,
            )
        mode = u.unit.get("Service", "KillMode")
        if mode in ("process", "none"):
            yield finding(
                "KS001",
                u.file,
                u.name,
                "[Service] KillMode",
                hazard=f"KillMode={mode}: on stop only the main process gets SIGTERM and its children are never "
                f"killed: orphaned job processes keep running after the unit stopped, and run again on restart",
                fix="set KillMode=mixed (SIGTERM to the main process, SIGKILL to the whole cgroup at TimeoutStopSec)",
                level="error" if worker or r == "unknown" else "warning",
            )


@rule("KS002")
def health(objects: list[LintObject]) -> Iterator[Finding]:
    for u, r in services(objects):
        if r not in ("worker", "web+worker"):
            continue
        if not parse_timespan(u.unit.get("Service", "WatchdogSec") or "0"):
            yield finding(
                "KS002",
                u.file,
                u.name,
                "[Service] WatchdogSec",
                hazard="no WatchdogSec: a worker that silently stops consuming is never restarted (systemd's "
                "only health check)",
                fix=f"set Type=notify and WatchdogSec=, and ping WATCHDOG=1 only while jobs are processed "
                f"(killsafe's worker does, from the same check as {contract.LIVE_PATH})",
            )
        if u.unit.get("Service", "Restart") in (None, "no"):
            yield finding(
                "KS002",
                u.file,
                u.name,
                "[Service] Restart",
                hazard="Restart= is not set (no): a crashed or killed worker stays down",
                fix="set Restart=always (with StartLimitBurst= and OnFailure= to alert on a crash loop)",
            )


@rule("KS003")
def memory(objects: list[LintObject]) -> Iterator[Finding]:
    for u, r in services(objects):
        if not (u.unit.get("Service", "MemoryMax") or u.unit.get("Service", "MemoryLimit")):
            yield finding(
                "KS003",
                u.file,
                u.name,
                "[Service] MemoryMax",
                hazard="no MemoryMax: one leak takes the VM's memory and the kernel's OOM killer picks its victims",
                fix="set MemoryMax= (and MemoryHigh= a little below it)",
                level="error" if r in ("worker", "web+worker") else "warning",
            )


@rule("KS004")
def split(objects: list[LintObject]) -> Iterator[Finding]:
    for u, r in services(objects):
        manager = roles.process_manager(_exec(u))
        if r == "web+worker" and roles.command_role(_exec(u)) == "web+worker":
            yield finding(
                "KS004",
                u.file,
                u.name,
                "[Service] ExecStart",
                hazard="one unit runs web and worker: they share one TimeoutStopSec and one restart",
                fix="one unit for the web, a template unit (x@.service) for the workers",
            )
        elif manager is not None:
            yield finding(
                "KS004",
                u.file,
                u.name,
                "[Service] ExecStart",
                hazard=f"runs the process manager {manager}: web and worker may share one unit's fate",
                fix="give each process its own unit",
                level="warning",
            )


@rule("KS007")
def redis_args(objects: list[LintObject]) -> Iterator[Finding]:
    for u, _ in services(objects):
        found = command_settings(_exec(u))
        if found:
            yield from evicting_findings(RedisSettings(u.file, u.name, "[Service] ExecStart", found))
