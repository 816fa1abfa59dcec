"""Redis safe for queues, wherever its settings show: redis.conf, `--maxmemory-policy` args, parameter groups.

BullMQ keeps jobs, locks (keys with a TTL) and queues in Redis: any eviction policy, the volatile-*
ones included, can drop a lock or a job, which is a lost or duplicated job. Redis's own default is
noeviction, so only an explicit evicting policy is an error; a config file without AOF is a warning.
"""

from __future__ import annotations

from collections.abc import Iterator

from killsafe import contract
from killsafe.checks import Finding
from killsafe.lint.model import Ingress, LintObject, RedisSettings
from killsafe.lint.registry import finding, rule
from killsafe.lint.roles import words

OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})


def conf_settings(text: str) -> dict[str, str]:
    """`directive value` lines; a directive given twice keeps the last (as Redis does)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts and not parts[0].startswith("#"):
            settings[parts[0].lower()] = parts[1].strip().strip("\"'") if len(parts) > 1 else ""
    return settings


def command_settings(command: list[object], redis_image: bool = False) -> dict[str, str]:
    """`redis-server [conf] --maxmemory-policy allkeys-lru --appendonly yes` -> directives (only for
    redis-server, or args alone on a Redis image, whose entrypoint runs it)."""
    ws = [str(w) for w in command]
    if not redis_image and not any("redis-server" in w or "valkey-server" in w for w in words(command)):
        return {}
    pieces = [p for w in ws for p in w.split()]
    settings: dict[str, str] = {}
    for i, piece in enumerate(pieces):
        if piece.startswith("--") and len(piece) > 2:
            key, sep, value = piece[2:].partition("=")
            if not sep and i + 1 < len(pieces) and not pieces[i + 1].startswith("--"):
                value = pieces[i + 1]
            settings[key.lower()] = value.strip("\"'")
    return settings


def evicting_findings(s: RedisSettings, full_config: bool = False) -> Iterator[Finding]:
    policy = s.settings.get("maxmemory-policy")
    if policy is not None and policy.lower() != "noeviction":
        yield finding(
            "KS007",
            s.file,
            s.ref,
            f"{s.path}{('.' if s.path else '')}maxmemory-policy",
            hazard=f"maxmemory-policy {policy} evicts keys at the memory limit: BullMQ jobs and their locks "
            f"(keys with a TTL) vanish, so jobs are lost or run twice",
            fix="set maxmemory-policy noeviction (Redis then refuses writes at the limit, and alerts can fire)",
        )
    if full_config and s.settings.get("appendonly", "no").lower() != "yes":
        yield finding(
            "KS007",
            s.file,
            s.ref,
            f"{s.path}{('.' if s.path else '')}appendonly",
            hazard="no AOF (appendonly yes): a Redis restart loses every job enqueued since the last snapshot",
            fix="set appendonly yes and appendfsync everysec",
            level="warning",
        )


@rule("KS007")
def redis_files(objects: list[LintObject]) -> Iterator[Finding]:
    for o in objects:
        if isinstance(o, RedisSettings):
            yield from evicting_findings(o, full_config=o.path == "")


def covers_redis(ingress: Ingress) -> bool:
    if ingress.protocol in ("-1", "all"):
        return True
    low = ingress.from_port if ingress.from_port is not None else 0
    high = ingress.to_port if ingress.to_port is not None else 65535
    return low in (-1,) or low <= contract.REDIS_PORT <= high


@rule("KS011")
def open_ingress(objects: list[LintObject]) -> Iterator[Finding]:
    for o in objects:
        if isinstance(o, Ingress) and OPEN_CIDRS & set(o.cidrs) and covers_redis(o):
            cidr = sorted(OPEN_CIDRS & set(o.cidrs))[0]
            ports = f"{o.from_port}-{o.to_port}" if o.from_port != o.to_port else str(o.from_port)
            yield finding(
                "KS011",
                o.file,
                o.ref,
                o.path,
                hazard=f"admits {cidr} on ports {ports} ({o.protocol}), Redis's {contract.REDIS_PORT} included: "
                f"anyone can read, delete or inject jobs",
                fix="admit only the web and worker security groups (source security group), never an open CIDR",
            )
