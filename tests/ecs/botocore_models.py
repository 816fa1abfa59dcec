"""Validate a request against botocore's service model, offline: ParamValidator plus what it skips.

botocore's ParamValidator checks structure, types, required members and `min`; it does not check
enum values or `max`. `model_problems` walks the input shape and adds those, so a misspelt
`networkMode` or a target group health check interval of 301 fails here as it would at AWS.
"""

from __future__ import annotations

import functools
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape
from botocore.validate import ParamValidator


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def operation(service: str, name: str) -> OperationModel:
    return _session().get_service_model(service).operation_model(name)


def model_problems(service: str, name: str, params: dict[str, Any]) -> list[str]:
    """Every problem botocore's model sees in `params` for `service.name` (empty: valid)."""
    shape = operation(service, name).input_shape
    report = ParamValidator().validate(params, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _walk(shape, params, name)
    return problems


def _walk(shape: Shape, value: Any, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for member, item in value.items():
            if member in shape.members:
                problems += _walk(shape.members[member], item, f"{path}.{member}")
    elif isinstance(shape, ListShape) and isinstance(value, list):
        problems += _bounds(shape, len(value), path, "length")
        for index, item in enumerate(value):
            problems += _walk(shape.member, item, f"{path}[{index}]")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            problems += _walk(shape.key, key, f"{path} key")
            problems += _walk(shape.value, item, f"{path}[{key}]")
    elif isinstance(value, str):
        enum = getattr(shape, "enum", None) or []
        if enum and value not in enum:
            problems.append(f"{path}: {value!r} is not one of {enum}")
        problems += _bounds(shape, len(value), path, "length")
    elif isinstance(value, int) and not isinstance(value, bool):
        problems += _bounds(shape, value, path, "value")
    return problems


def _bounds(shape: Shape, measured: int, path: str, what: str) -> list[str]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and measured < low:
        return [f"{path}: {what} {measured} is below the model's min {low}"]
    if high is not None and measured > high:
        return [f"{path}: {what} {measured} is above the model's max {high}"]
    return []
