"""The stack-file reference, generated from the spec itself so the docs cannot drift from the code.

README.md embeds the output of `killsafe config-reference` between markers; a test keeps them equal.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from killsafe.spec import StackConfig


def config_reference() -> str:
    """A Markdown table of every stack-file key, its type, default and meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += _rows(StackConfig, "killsafe:")
    return "\n".join(rows) + "\n"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _submodel(field.annotation)
        default = _default(field)
        doc = (field.description or (sub.__doc__ or "").strip().splitlines()[0] if sub else field.description) or ""
        rows.append(f"| `{key}` | {_type(field.annotation)} | {default} | {doc.replace('|', '/')} |")
        if sub is not None:
            rows += _rows(sub, key + ".")
    return rows


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is None or field.default is PydanticUndefined:
        return "none" if field.default is None else ""
    return f"`{field.default}`"


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(str(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in get_args(annotation) if a is not type(None)) + " (optional)"
    if origin is list:
        return f"list of {_type(get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))
