"""Telling a worker from a web server or a Redis, on objects killsafe did not write.

In order, the first that answers wins:
1. an explicit role: label or annotation `killsafe.dev/role` (or `app.kubernetes.io/component`)
   worker|web|redis|..., an ECS tag or docker label `killsafe.dev/role`, `X-Killsafe-Role=` in a unit;
2. the command: a Redis server (`redis-server`, a `redis` image), a web server (gunicorn, uvicorn,
   puma, `rails server`, `killsafe-web` ...), a worker (a word containing `worker`, or sidekiq,
   resque, dramatiq, `queue:work`, `jobs:work` ...); web and worker markers both => "web+worker";
3. a queue setting in the environment (a variable whose name contains QUEUE) on something that
   exposes no port, or a name containing `worker`.
Anything else is "unknown": the rules that only make sense for workers then speak as warnings.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Role = Literal["worker", "web", "web+worker", "redis", "unknown", "other"]

WEB_PROGRAMS = frozenset(
    {"gunicorn", "uvicorn", "hypercorn", "daphne", "waitress-serve", "puma", "unicorn", "killsafe-web", "granian"}
)
WORKER_PROGRAMS = frozenset(
    {"sidekiq", "resque", "dramatiq", "huey_consumer", "huey_consumer.py", "faktory", "good_job", "solid_queue"}
)
WORKER_SUBCOMMANDS = frozenset({"queue:work", "jobs:work", "horizon", "jobs:workoff"})
WEB_SUBCOMMANDS = (("rails", "server"), ("rails", "s"), ("manage.py", "runserver"), ("flask", "run"))
PROCESS_MANAGERS = frozenset({"supervisord", "honcho", "foreman", "overmind", "pm2", "pm2-runtime", "runsvdir"})
EXPLICIT: dict[str, Role] = {
    "worker": "worker",
    "web": "web",
    "api": "web",
    "frontend": "web",
    "redis": "redis",
    "cache": "redis",
    "web+worker": "web+worker",
}
OTHER_PROGRAMS = frozenset({"killsafe-dashboard", "redis_exporter", "node_exporter", "prometheus-node-exporter"})
"""Programs known to be neither web nor worker (they read the queue's config but consume nothing)."""
OTHER_COMPONENTS = frozenset({"dashboard", "exporter", "redis-exporter", "metrics", "scheduler", "beat", "cron"})


def words(command: Iterable[object]) -> list[str]:
    """The command's words, shell strings (`sh -c "a && b"`) split too, program paths reduced to names."""
    found: list[str] = []
    for part in command:
        text = str(part)
        try:
            pieces = shlex.split(text)
        except ValueError:
            pieces = text.split()
        for piece in pieces:
            if " " in piece:  # the script of `sh -c "..."`
                found += words([piece])
            else:
                found.append(piece.rsplit("/", 1)[-1].lower())
    return found


def command_role(command: Iterable[object]) -> Role | None:
    """What a command line runs, by its program and subcommand names."""
    ws = words(command)
    pairs = set(itertools.pairwise(ws))
    web = any(w in WEB_PROGRAMS for w in ws) or any(p in pairs for p in WEB_SUBCOMMANDS)
    worker = any("worker" in w or w in WORKER_PROGRAMS or w in WORKER_SUBCOMMANDS for w in ws)
    if any(w in ("redis-server", "redis-sentinel") for w in ws):
        return "redis"
    if web and worker:
        return "web+worker"
    if web:
        return "web"
    if worker:
        return "worker"
    return "other" if any(w in OTHER_PROGRAMS for w in ws) else None


def process_manager(command: Iterable[object]) -> str | None:
    """A process manager in the command (it may start web and worker in one container)."""
    return next((w for w in words(command) if w in PROCESS_MANAGERS), None)


def explicit_role(*labels: Mapping[str, Any]) -> Role | None:
    for mapping in labels:
        for key in ("killsafe.dev/role", "app.kubernetes.io/component"):
            value = str(mapping.get(key, "")).lower()
            if value in EXPLICIT:
                return EXPLICIT[value]
            if value in OTHER_COMPONENTS:
                return "other"
    return None


def is_redis_image(image: object) -> bool:
    """`redis:7`, `docker.io/bitnami/redis:7.2`, `valkey/valkey` — but not `redis_exporter`."""
    name = str(image or "").rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0].lower()
    return name in ("redis", "redis-stack-server", "valkey", "keydb", "dragonfly")


def has_queue_env(names: Iterable[str]) -> bool:
    return any("QUEUE" in n.upper() for n in names)


def guess(
    *,
    labels: Iterable[Mapping[str, Any]],
    commands: Iterable[Iterable[object]],
    images: Iterable[object],
    env_names: Iterable[str],
    exposes_ports: bool,
    name: str,
) -> Role:
    """The role of one workload (a pod template, a task definition, a unit) from all it shows."""
    explicit = explicit_role(*labels)
    if explicit is not None:
        return explicit
    if any(is_redis_image(i) for i in images):
        return "redis"
    roles = {r for r in (command_role(c) for c in commands) if r is not None}
    if "web+worker" in roles or {"web", "worker"} <= roles:
        return "web+worker"
    if len(roles) == 1:
        return roles.pop()
    if has_queue_env(env_names) and not exposes_ports:
        return "worker"
    return "worker" if re.search(r"worker", name, re.IGNORECASE) else "unknown"
