"""Loading a stack file into a `StackConfig`, with errors that name the file, path, value and fix.

The same `parse_stack_config` serves the CLI (reading `stacks/Pulumi.<stack>.yaml` itself) and the
Pulumi program (reading `pulumi.Config("killsafe")`), so both report identical errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from killsafe.spec import MISSING, FieldError, StackConfig

NAMESPACE = "killsafe"
CONFIG_KEYS = ("target", "workload", "render_yaml_to_directory")


@dataclass(frozen=True)
class Issue:
    """One problem in a stack file."""

    source: str
    path: str
    value: object
    message: str

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f"{_show(self.value)} "
        return f"{self.source}: {self.path}: {shown}{self.message}"


class ConfigError(Exception):
    """Invalid stack configuration. Nothing has been written or created when this is raised."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


_MISSING: Any = MISSING


def stack_file(stack: str, stacks_dir: Path) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def load_stack(stack: str, stacks_dir: Path = Path("stacks")) -> StackConfig:
    """Read and validate `stacks_dir/Pulumi.<stack>.yaml`."""
    path = stack_file(stack, stacks_dir)
    source = str(path)
    if not path.is_file():
        available = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))
        hint = f"; stacks here: {', '.join(available)}" if available else ""
        raise ConfigError([Issue(source, "stack", stack, f"has no stack file at {source}{hint}")])
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([Issue(source, "(file)", _MISSING, f"is not valid YAML: {exc}")]) from exc
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError([Issue(source, "config", _MISSING, "is missing; add a config: mapping")])
    ours: dict[str, Any] = {}
    issues: list[Issue] = []
    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if namespace != NAMESPACE:
            continue  # other providers' settings (kubernetes:context, aws:region, ...)
        if name not in CONFIG_KEYS:
            issues.append(Issue(source, str(key), _MISSING, _unknown_key(name, CONFIG_KEYS, NAMESPACE + ":")))
            continue
        ours[name] = value
    if issues:
        raise ConfigError(issues)
    return parse_stack_config(ours, source)


def parse_stack_config(raw: Mapping[str, Any], source: str) -> StackConfig:
    """Validate the `killsafe:` namespace of a stack (keys without the `killsafe:` prefix)."""
    try:
        return StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_issues(exc, raw, source)) from None


def _issues(exc: ValidationError, raw: Mapping[str, Any], source: str) -> list[Issue]:
    issues: list[Issue] = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            issues.append(Issue(source, _config_path(loc + cause.loc), cause.value, cause.message))
            continue
        value = _lookup(raw, error["loc"])
        issues.append(Issue(source, _config_path(loc), value, _message(error, loc)))
    return issues


def _config_path(loc: tuple[str, ...]) -> str:
    if not loc:
        return f"{NAMESPACE}:"
    head, *rest = loc
    path = f"{NAMESPACE}:{head}"
    for part in rest:
        path += f"[{part}]" if part.isdigit() else f".{part}"
    return path


def _lookup(raw: Any, loc: tuple[int | str, ...]) -> object:
    node = raw
    for part in loc:
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_mapping or in_list:
            node = node[part]
        else:
            return _MISSING
    return node


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of `loc` (for "did you mean")."""
    model: type[BaseModel] | None = StackConfig
    for part in loc[:-1]:
        if model is None or part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _submodel(field.annotation)
    return model


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _message(error: Any, loc: tuple[str, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = tuple(model.model_fields) if model else ()
        return _unknown_key(loc[-1], allowed, "")
    if kind == "missing":
        example = _example(loc)
        return "is required; add it" + (f", e.g. {loc[-1]}: {example}" if example else "")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": ("ge", ">="),
            "greater_than": ("gt", ">"),
            "less_than_equal": ("le", "<="),
            "less_than": ("lt", "<"),
        }[kind]
        return f"must be {bound[1]} {ctx[bound[0]]}; set a value in range"
    if kind == "string_pattern_mismatch":
        if loc[-1] == "name" or loc[-2:-1] == ("kubernetes",):
            return (
                "is not a DNS-1123 label; use lowercase letters, digits and '-', starting and ending "
                "with a letter or digit, e.g. emails"
            )
        return f"does not match {ctx['pattern']}; use letters, digits, '_', '.' or '-'"
    if kind == "string_too_long":
        return f"is longer than {ctx['max_length']} characters; shorten it"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty; give at least one value"
    if kind == "literal_error":
        return f"is not one of {ctx['expected']}; pick one of those"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"has the wrong type ({error['msg'].lower()}); fix the value"
    return f"{error['msg']}; fix the value"


def _example(loc: tuple[str, ...]) -> str | None:
    model = _model_at(loc)
    field = model.model_fields.get(loc[-1]) if model else None
    if field is not None and field.examples:
        return _show(field.examples[0])
    return None


def _unknown_key(name: str, allowed: tuple[str, ...], prefix: str) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {prefix}{close[0]}? " if close else ""
    return f"is not a known key; {hint}known keys: {', '.join(allowed)}"


def _show(value: object) -> str:
    if isinstance(value, str):
        return value if value else "''"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
