"""AWS API requests as plain data: what the ECS builder returns, `render` writes and the component creates.

A request is one botocore operation's input, shaped exactly as botocore takes it (`params`), plus a
stable `key` that other requests refer to. Values that exist only once AWS has created something
(an ARN, an endpoint, a generated token) are `Ref`s; `Sub` joins text and refs into one string; `Json`
marks a parameter botocore takes as JSON text (IAM policy documents, a secret's value).

On the wire (`wire()`: rendered files, `killsafe check`) a ref is the text `${key.attribute}`, so
every rendered file still validates against the botocore service model. The Pulumi component
resolves the same refs to the outputs of the children it created (`attribute` is the pulumi-aws
output name); `resolve()` does it with plain values, which is how the parity test compares them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

ACCOUNT = "aws"
"""The pseudo-request whose `account_id` is the deploying AWS account."""


@dataclass(frozen=True)
class Ref:
    """An output of another request's resource (or of the pseudo-request `aws`)."""

    key: str
    attribute: str

    def text(self) -> str:
        return f"${{{self.key}.{self.attribute}}}"


@dataclass(frozen=True)
class Sub:
    """A string made of literal text and refs, e.g. `Sub("${log.arn}", ":*")`."""

    parts: tuple[str | Ref, ...]

    def __init__(self, *parts: str | Ref) -> None:
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True)
class Json:
    """A parameter botocore takes as a JSON string (a policy document, a secret value)."""

    document: Any


@dataclass(frozen=True)
class AwsRequest:
    """One API call. `amends` names the request whose resource this call configures further
    (PutRetentionPolicy amends CreateLogGroup): the component folds both into one Pulumi resource."""

    key: str
    service: str
    operation: str
    params: dict[str, Any]
    amends: str | None = None
    secret_params: tuple[str, ...] = field(default=())
    """Top-level params that hold a secret (a generated token): never shown in plain text."""
    managed_elsewhere: tuple[str, ...] = field(default=())
    """Top-level params another request takes over once created (the worker service's desiredCount under
    Application Auto Scaling): set at creation, never reset by a later deploy."""

    def wire(self) -> AwsRequest:
        return replace(self, params=wire(self.params))

    @property
    def file_stem(self) -> str:
        """`<key>.<service>.<Operation>`: read back by `parse_file_stem`."""
        return f"{self.key}.{self.service}.{self.operation}"


FILE_STEM = re.compile(r"^(?:\d+-)?(?P<key>[a-z0-9-]+)\.(?P<service>[a-z0-9-]+)\.(?P<operation>[A-Za-z]+)$")


def parse_file_stem(stem: str) -> tuple[str, str, str]:
    match = FILE_STEM.match(stem)
    if match is None:
        raise ValueError(f"{stem!r} is not <index>-<key>.<service>.<Operation> as killsafe render names files")
    return match["key"], match["service"], match["operation"]


def encode_json(document: Any) -> str:
    """JSON text of a `Json` parameter: compact, key order as built (the same bytes everywhere)."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def _walk(value: Any, leaf: Callable[[Ref | Sub | Json], Any]) -> Any:
    if isinstance(value, Ref | Sub | Json):
        return leaf(value)
    if isinstance(value, Mapping):
        return {k: _walk(v, leaf) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, leaf) for v in value]
    return value


def resolve(value: Any, lookup: Callable[[Ref], str]) -> Any:
    """`value` with every ref replaced by `lookup(ref)` and every Json encoded: plain botocore input."""

    def leaf(node: Ref | Sub | Json) -> Any:
        if isinstance(node, Ref):
            return lookup(node)
        if isinstance(node, Sub):
            return "".join(part if isinstance(part, str) else lookup(part) for part in node.parts)
        return encode_json(resolve(node.document, lookup))

    return _walk(value, leaf)


def wire(value: Any) -> Any:
    """`value` as rendered: refs as `${key.attribute}` text."""
    return resolve(value, Ref.text)


def refs(value: Any) -> Iterator[Ref]:
    """Every ref inside `value`, in order."""
    found: list[Ref] = []

    def leaf(node: Ref | Sub | Json) -> None:
        if isinstance(node, Ref):
            found.append(node)
        elif isinstance(node, Sub):
            found.extend(part for part in node.parts if isinstance(part, Ref))
        else:
            found.extend(refs(node.document))

    _walk(value, leaf)
    return iter(found)
