"""The declared job budget of a workload, and whether its kill deadline (grace period) covers it.

A workload declares its longest job with `killsafe.dev/max-job-seconds` (annotation, label, tag,
docker label, `X-Killsafe-Max-Job-Seconds=` in a unit) or the worker contract's env
`KILLSAFE_MAX_JOB_SECONDS`; its drain deadline with `KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS`. The kill
deadline must leave killsafe.budget.STOP_RESERVE_SECONDS after the longest job, and exceed the drain
deadline. A platform default (Kubernetes 30 s, ECS 30 s, systemd 90 s) is a guess, not a decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from killsafe import contract
from killsafe.budget import STOP_RESERVE_SECONDS
from killsafe.checks import Finding
from killsafe.lint.model import MAX_JOB_KEY
from killsafe.lint.registry import finding

DEFAULT_KILL_DEADLINE = {"kubernetes": 30, "ecs": 30, "systemd": 90}
"""Kubernetes terminationGracePeriodSeconds, ECS stopTimeout, systemd DefaultTimeoutStopSec."""
DECLARE = f"declare the longest job with {MAX_JOB_KEY} (annotation, tag or label) or env {contract.ENV_MAX_JOB_SECONDS}"


@dataclass(frozen=True)
class Declared:
    max_job_seconds: int | None
    source: str
    drain_seconds: int | None = None

    @property
    def needed(self) -> int | None:
        """The shortest kill deadline that lets the longest job (and the drain) finish."""
        needs = []
        if self.max_job_seconds is not None:
            needs.append(self.max_job_seconds + STOP_RESERVE_SECONDS)
        if self.drain_seconds is not None:
            needs.append(self.drain_seconds + 1)
        return max(needs) if needs else None

    def explain(self) -> str:
        parts = []
        if self.max_job_seconds is not None:
            parts.append(f"the longest job ({self.max_job_seconds} s, {self.source}) + {STOP_RESERVE_SECONDS} s")
        if self.drain_seconds is not None:
            parts.append(f"the drain deadline ({contract.ENV_SHUTDOWN_TIMEOUT_SECONDS}={self.drain_seconds})")
        return " and ".join(parts)


def _seconds(value: object) -> int | None:
    text = str(value if value is not None else "").strip().rstrip("s")
    return int(text) if text.isdigit() else None


def declared(keyed: Iterable[tuple[str, Mapping[str, object]]], envs: Iterable[Mapping[str, object]]) -> Declared:
    """The budget from (where, labels/annotations/tags) pairs, then the worker contract's env."""
    envs = list(envs)
    drain = next((d for d in (_seconds(e.get(contract.ENV_SHUTDOWN_TIMEOUT_SECONDS)) for e in envs) if d), None)
    for where, mapping in keyed:
        found = _seconds(mapping.get(MAX_JOB_KEY))
        if found is not None:
            return Declared(found, f"{where} {MAX_JOB_KEY}", drain)
    for env in envs:
        found = _seconds(env.get(contract.ENV_MAX_JOB_SECONDS))
        if found is not None:
            return Declared(found, f"env {contract.ENV_MAX_JOB_SECONDS}", drain)
    return Declared(None, "", drain)


def grace_findings(
    platform: str,
    file: str,
    ref: str,
    path: str,
    *,
    setting: str,
    value: float | None,
    budget: Declared,
    worker: bool,
) -> list[Finding]:
    """KS001 for one kill deadline: unset (platform default), or shorter than the declared budget."""
    default = DEFAULT_KILL_DEADLINE[platform]
    needed = budget.needed
    if value is None:
        if needed is not None and needed <= default:
            return [
                finding(
                    "KS001",
                    file,
                    ref,
                    path,
                    hazard=f"{setting} is not set: the platform default ({default} s) covers {budget.explain()} "
                    f"today, but only by accident",
                    fix=f"set {setting} to {needed} explicitly",
                    level="warning",
                )
            ]
        reason = (
            f"shorter than {budget.explain()} = {needed} s"
            if needed is not None
            else f"any job longer than ~{default - STOP_RESERVE_SECONDS} s is killed mid-way on every deploy"
        )
        return [
            finding(
                "KS001",
                file,
                ref,
                path,
                hazard=f"{setting} is not set: the platform default of {default} s applies, {reason}",
                fix=f"set {setting} to {needed} (longest job + {STOP_RESERVE_SECONDS} s)"
                if needed is not None
                else f"set {setting} to the longest job + at least {STOP_RESERVE_SECONDS} s, and {DECLARE}",
                level="error" if worker else "warning",
            )
        ]
    if needed is not None and value < needed:
        return [
            finding(
                "KS001",
                file,
                ref,
                path,
                hazard=f"{setting} {value:g} s is shorter than {budget.explain()} = {needed} s: jobs are killed "
                f"mid-way on every deploy or scale-in",
                fix=f"set {setting} to at least {needed}, or shorten the jobs",
            )
        ]
    if needed is None and worker:
        return [
            finding(
                "KS001",
                file,
                ref,
                path,
                hazard=f"{setting} is {value:g} s but no job budget is declared: nothing says it covers the "
                f"longest job",
                fix=DECLARE,
                level="warning",
            )
        ]
    return []
