"""The checklist as code: what every deployment of a workload must satisfy, on every target.

A rule has one code and one meaning everywhere (KS001 is "the platform's kill deadline covers the
job budget" on Kubernetes, ECS and systemd alike); each target package implements the codes that
apply to its objects in its own `checks.py` and registers them in a `RuleSet`. `killsafe check`
runs a target's rules over the objects its builder produces, or over rendered files someone may
have edited by hand, so a dangerous platform default or a hand edit is caught before it ships.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from killsafe.spec import WorkloadSpec

Level = Literal["error", "warning"]

RULE_TITLES: dict[str, str] = {
    "KS001": "the worker's grace period covers the job budget and its own drain deadline",
    "KS002": "every long-running container has readiness and liveness probes; the worker a startup probe",
    "KS003": "every container has CPU and memory requests and limits",
    "KS004": "web and worker run as separate Deployments/services/units; nothing routes traffic to workers, "
    "and the dashboard is never reachable through the web Service/port",
    "KS005": "processes run unprivileged and hardened (Pod Security 'restricted', no service-account token)",
    "KS006": "no secret in plain text: no Secret data in manifests, no credentials in env or args",
    "KS007": "Redis is configured for queues: noeviction and AOF persistence",
    "KS008": "rollouts never drop worker capacity",
    "KS009": "voluntary disruptions (node drains) keep workers running",
    "KS010": "a PodDisruptionBudget allows at least one eviction, so node drains can finish",
    "KS011": "Redis is never open to the internet (no 0.0.0.0/0 or ::/0 ingress to its port)",
}
"""One meaning per code on every target; a target implements the codes that apply to it."""


@dataclass(frozen=True)
class Finding:
    rule: str
    obj: str
    message: str
    level: Level = "error"
    file: str = ""
    """Where `killsafe lint` found it (the other commands check objects, not files)."""
    path: str = ""
    """The field path inside the object (`spec.template.spec.containers[0].livenessProbe`)."""
    fix: str = ""

    def __str__(self) -> str:
        tag = " (warning)" if self.level == "warning" else ""
        return f"{self.rule}{tag} {self.obj}: {self.message}"


Rule = Callable[[WorkloadSpec, list[Any]], Iterator[Finding]]


@dataclass
class RuleSet:
    """The rules one target implements, by code."""

    target: str
    rules: dict[str, Rule] = field(default_factory=dict)

    def rule(self, code: str) -> Callable[[Rule], Rule]:
        if code not in RULE_TITLES:
            raise ValueError(f"rule {code} has no title in killsafe.checks.RULE_TITLES")

        def register(fn: Rule) -> Rule:
            self.rules[code] = fn
            return fn

        return register

    def titles(self) -> dict[str, str]:
        return {code: RULE_TITLES[code] for code in sorted(self.rules)}

    def run(self, spec: WorkloadSpec, objects: list[Any]) -> list[Finding]:
        """Every finding of every rule, in rule order."""
        findings: list[Finding] = []
        for code in sorted(self.rules):
            findings.extend(self.rules[code](spec, objects))
        return findings


WORKER_BASELINE_MIB = 64
"""The reference worker's own memory before any job (53 MiB measured idle in a memory cgroup, rounded up)."""
MIN_MIB_PER_JOB = 40
"""Memory each in-flight job can plausibly need: a job run in a child process (the `cpu` handler's
sandbox) took 35 MiB per child measured, before any data of its own."""


def memory_per_job_warning(rule: str, obj: str, memory_mib: int, jobs_in_flight: int) -> Finding | None:
    """A warning when `memory_mib` leaves under MIN_MIB_PER_JOB per in-flight job after the worker's
    baseline. Past the limit the kernel OOM-kills the container, and on cgroup v2 (memory.oom.group)
    that kills the worker and every job in flight, not just the one that grew."""
    per_job = (memory_mib - WORKER_BASELINE_MIB) / jobs_in_flight
    if per_job >= MIN_MIB_PER_JOB:
        return None
    needed = WORKER_BASELINE_MIB + MIN_MIB_PER_JOB * jobs_in_flight
    return Finding(
        rule,
        obj,
        f"{memory_mib} MiB for {jobs_in_flight} jobs in flight leaves {max(per_job, 0):.0f} MiB per job after "
        f"the worker's ~{WORKER_BASELINE_MIB} MiB (a job in a child process alone takes ~35 MiB); one job over "
        f"the limit gets the whole container OOM-killed, every in-flight job with it. Give the worker at "
        f"least {needed} MiB or lower concurrency_per_queue",
        level="warning",
    )


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]
