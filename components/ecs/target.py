"""The ECS Fargate target as the CLI sees it: one JSON request file per AWS call, in dependency order.

Each file is exactly the input of one botocore operation (`aws <service> <operation> --cli-input-json
file://<file>` takes it), named `<index>-<key>.<service>.<Operation>.json`. JSON has no comments,
so the folder's marker file (killsafe.render.MARKER) is what tells a re-render these files are its own.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from killsafe.ecs.build import prerequisites, wire_requests
from killsafe.ecs.checks import RULES
from killsafe.ecs.requests import AwsRequest, parse_file_stem
from killsafe.render import RenderedFile, RenderError, to_json
from killsafe.spec import StackConfig
from killsafe.targets import Target

FOLDER = "ecs"


def requests(config: StackConfig) -> list[AwsRequest]:
    """The AWS requests for a stack, refs as text: exactly what `EcsWorkload` creates."""
    return wire_requests(config.workload)


def render(config: StackConfig, source: str) -> list[RenderedFile]:
    return [
        RenderedFile(PurePosixPath(FOLDER) / f"{index:02d}-{request.file_stem}.json", to_json(request.params))
        for index, request in enumerate(requests(config))
    ]


def read_rendered(folder: Path) -> list[Any]:
    """The requests back from a rendered folder (which may have been edited by hand)."""
    found: list[Any] = []
    for path in sorted(folder.glob("*.json")):
        try:
            key, service, operation = parse_file_stem(path.stem)
            params = json.loads(path.read_text())
        except ValueError as err:
            raise RenderError(f"{path}: {err}") from None
        if not isinstance(params, dict):
            raise RenderError(f"{path}: holds {type(params).__name__}, not a request object")
        found.append(AwsRequest(key, service, operation, params))
    return found


TARGET = Target(
    name=FOLDER,
    render=render,
    objects=requests,
    read_rendered=read_rendered,
    rules=RULES,
    prerequisites=lambda config: prerequisites(config.workload),
    kill_deadline_name="stopTimeout",
)
