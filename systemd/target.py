"""The systemd target as the CLI sees it: a folder of units, environment files and an install script."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from killsafe.render import RenderedFile
from killsafe.spec import StackConfig
from killsafe.systemd.build import FOLDER, build_files, prerequisites
from killsafe.systemd.checks import RULES
from killsafe.systemd.unitfile import SystemdFile, read_folder
from killsafe.targets import Target


def render(config: StackConfig, source: str) -> list[RenderedFile]:
    return build_files(config.workload, source)


def objects(config: StackConfig) -> list[SystemdFile]:
    """The rendered files as the checks read them: exactly what SystemdWorkload pushes to each host."""
    return [SystemdFile(PurePosixPath(*f.path.parts[1:]), f.content) for f in build_files(config.workload, "stack")]


def read_rendered(folder: Path) -> list[SystemdFile]:
    return read_folder(folder)


TARGET = Target(
    name=FOLDER,
    render=render,
    objects=objects,
    read_rendered=read_rendered,
    rules=RULES,
    prerequisites=lambda config: prerequisites(config.workload),
    kill_deadline_name="TimeoutStopSec",
)
