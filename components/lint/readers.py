"""Files -> lint objects: Kubernetes YAML/JSON, ECS task definitions, systemd units, redis.conf, env files.

Kubernetes: any number of `---` documents (Helm's rendered output with `# Source:` comments and
empty documents included), `kind: List` expanded. ECS: a RegisterTaskDefinition request
(`containerDefinitions`) or a describe-task-definition output (`taskDefinition`), and the other
request files `killsafe render` writes (`NAME.SERVICE.Operation.json`: CreateService, security-group
ingress and cache parameters are read, the rest carry nothing to check). systemd: `.service`,
`.target`, `.socket`, `.timer`, templates (`x@.service`) included, parsed by killsafe.systemd.unitfile
(continuation lines, repeated and reset keys).

A file given by name must be one of these, or the read fails (LintInputError, exit 2). In a folder,
files of other kinds (install.sh, README.md, a YAML that is no Kubernetes object) are skipped.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from killsafe.lint.model import (
    EcsService,
    EnvFile,
    Ingress,
    KubeObject,
    LintInputError,
    LintObject,
    RedisSettings,
    SystemdUnit,
    TaskDefinition,
)
from killsafe.lint.redis import conf_settings
from killsafe.systemd.unitfile import UNIT_SUFFIXES, Unit, logical_lines, parse_unit

YAML_SUFFIXES = (".yaml", ".yml")
LINTABLE_SUFFIXES = (*YAML_SUFFIXES, ".json", ".env", ".conf", *UNIT_SUFFIXES)
RENDERED_REQUEST = re.compile(r"\.(?P<service>[a-z0-9-]+)\.(?P<operation>[A-Z][A-Za-z0-9]+)\.json$")
"""`killsafe render`'s ECS file names: `42-worker-task-definition.ecs.RegisterTaskDefinition.json`."""


@dataclass
class ReadResult:
    objects: list[LintObject] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Files in a folder that are not a kind `lint` knows, with the reason."""


def read_paths(paths: list[Path]) -> ReadResult:
    """Every object of every file (folders walked); units see the env files given with them."""
    result = ReadResult()
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if not _lintable_name(child):
                    result.skipped.append(f"{child}: not a file kind lint reads")
                    continue
                try:
                    result.objects += read_file(child)
                    result.files.append(str(child))
                except _NotThisKind as exc:
                    result.skipped.append(f"{child}: {exc}")
        elif path.exists() or path.is_symlink():
            try:
                result.objects += read_file(path)
            except _NotThisKind as exc:
                raise LintInputError(f"{path}: {exc}") from None
            result.files.append(str(path))
        else:
            raise LintInputError(f"{path}: no such file or folder")
    return ReadResult(_with_env_files(result.objects), result.files, result.skipped)


class _NotThisKind(LintInputError):
    """Readable, but no object lint knows (a folder skips it, a named file is an error)."""


def _lintable_name(path: Path) -> bool:
    return path.suffix in LINTABLE_SUFFIXES and (path.suffix != ".conf" or _is_redis_conf(path))


def _is_redis_conf(path: Path) -> bool:
    return path.suffix == ".conf" and "redis" in path.name.lower()


def read_file(path: Path) -> list[LintObject]:
    """The objects of one file, by its name and content."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LintInputError(f"{name}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix in UNIT_SUFFIXES:
        return [read_unit(name, path.name, text)]
    if path.suffix == ".env":
        return [EnvFile(name, parse_env(text))]
    if _is_redis_conf(path):
        return [RedisSettings(name, path.name, "", conf_settings(text))]
    if path.suffix == ".json":
        return read_json(name, text)
    if path.suffix in YAML_SUFFIXES:
        return read_yaml(name, text)
    raise _NotThisKind("not a Kubernetes YAML, ECS JSON, systemd unit, env file or redis.conf (by its extension)")


def read_yaml(name: str, text: str) -> list[LintObject]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LintInputError(f"{name}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    return list(_kube_objects(name, docs))


def _kube_objects(name: str, docs: list[Any]) -> Iterator[LintObject]:
    if not docs:
        raise _NotThisKind("holds no Kubernetes object (empty)")
    for index, doc in enumerate(docs):
        if not (isinstance(doc, dict) and isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)):
            raise _NotThisKind(f"document {index + 1} is not a Kubernetes object (no apiVersion and kind)")
        if doc["kind"] == "List" or (doc["kind"].endswith("List") and isinstance(doc.get("items"), list)):
            for i, item in enumerate(doc.get("items") or []):
                if not (isinstance(item, dict) and isinstance(item.get("kind"), str)):
                    raise _NotThisKind(f"document {index + 1}: items[{i}] is not a Kubernetes object (no kind)")
                yield KubeObject(name, item, prefix=f"items[{i}].")
        else:
            yield KubeObject(name, doc)


def read_json(name: str, text: str) -> list[LintObject]:
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise LintInputError(f"{name}: not valid JSON: {exc}") from None
    if isinstance(body, dict) and isinstance(body.get("apiVersion"), str) and isinstance(body.get("kind"), str):
        return list(_kube_objects(name, [body]))
    if isinstance(body, dict) and isinstance(body.get("taskDefinition"), dict):
        task = body["taskDefinition"]
        return [TaskDefinition(name, task, _tags(body.get("tags") or task.get("tags")), prefix="taskDefinition.")]
    if isinstance(body, dict) and isinstance(body.get("containerDefinitions"), list):
        return [TaskDefinition(name, body, _tags(body.get("tags")))]
    rendered = RENDERED_REQUEST.search(name)
    if rendered is not None and isinstance(body, dict):
        return list(_rendered_request(name, rendered["operation"], body))
    raise _NotThisKind(
        "not an ECS task definition (a register-task-definition request with containerDefinitions, or a "
        "describe-task-definition output with taskDefinition) nor a Kubernetes object"
    )


def _tags(raw: object) -> dict[str, str]:
    """ECS tags as `[{key, value}]` (the API) or a plain mapping (Pulumi)."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {str(t.get("key")): str(t.get("value")) for t in raw if isinstance(t, dict)}
    return {}


def _rendered_request(name: str, operation: str, body: dict[str, Any]) -> Iterator[LintObject]:
    if operation == "CreateService":
        yield EcsService(name, body)
    elif operation == "AuthorizeSecurityGroupIngress":
        ref = f"SecurityGroupIngress/{body.get('GroupId', '?')}"
        for i, permission in enumerate(body.get("IpPermissions") or []):
            cidrs = [r.get("CidrIp") for r in permission.get("IpRanges") or []]
            cidrs += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges") or []]
            yield Ingress(
                name,
                ref,
                f"IpPermissions[{i}]",
                tuple(str(c) for c in cidrs if c),
                permission.get("FromPort"),
                permission.get("ToPort"),
                str(permission.get("IpProtocol", "tcp")),
            )
    elif operation == "ModifyCacheParameterGroup":
        values = {
            str(p.get("ParameterName")): str(p.get("ParameterValue")) for p in body.get("ParameterNameValues") or []
        }
        yield RedisSettings(
            name, f"CacheParameterGroup/{body.get('CacheParameterGroupName', '?')}", "ParameterNameValues", values
        )


UNIT_LINE = re.compile(r"^(\[[^\]]+\]|[A-Za-z0-9_-]+\s*=.*)$")


def read_unit(file: str, name: str, text: str) -> SystemdUnit:
    """A unit file, refused when a line is neither a section, a Key=value, a comment nor blank."""
    seen_section = False
    for number, line in logical_lines(text):
        if not UNIT_LINE.match(line):
            raise LintInputError(
                f"{file}: line {number} is not a systemd unit line ([Section] or Key=value): {line[:60]}"
            )
        if line.startswith("["):
            seen_section = True
        elif not seen_section:
            raise LintInputError(f"{file}: line {number}: Key=value before any [Section]; not a systemd unit")
    if not seen_section:
        raise LintInputError(f"{file}: no [Section]; not a systemd unit")
    unit = parse_unit(text)
    return SystemdUnit(file, name, unit, _unit_env(unit))


def _unit_env(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for assignment in unit.values("Service", "Environment"):
        for piece in _shell_words(assignment):
            key, sep, value = piece.partition("=")
            if sep:
                env[key] = value
    return env


def _shell_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines (EnvironmentFile= syntax: comments, optional quotes)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip().strip("\"'")
    return env


def _with_env_files(objects: list[LintObject]) -> list[LintObject]:
    """Units whose EnvironmentFile= names an env file given too (by file name) see its values."""
    env_files = {Path(o.file).name: o.values for o in objects if isinstance(o, EnvFile)}
    resolved: list[LintObject] = []
    for o in objects:
        if isinstance(o, SystemdUnit) and env_files:
            env: dict[str, str] = {}
            for ref in o.unit.values("Service", "EnvironmentFile"):
                env.update(env_files.get(Path(ref.lstrip("-")).name, {}))
            resolved.append(SystemdUnit(o.file, o.name, o.unit, {**env, **o.env}))
        else:
            resolved.append(o)
    return resolved
