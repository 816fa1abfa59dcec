"""The Kubernetes target as the CLI sees it: one YAML file per object, in apply order."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from killsafe.kubernetes.build import build_manifests, prerequisites
from killsafe.kubernetes.checks import RULES
from killsafe.render import RenderedFile, header, to_yaml
from killsafe.spec import StackConfig
from killsafe.targets import Target

FOLDER = "kubernetes"


def manifests(config: StackConfig) -> list[dict[str, Any]]:
    """The Kubernetes objects for a stack: exactly what `KubernetesWorkload` creates."""
    return build_manifests(config.workload)


def render(config: StackConfig, source: str) -> list[RenderedFile]:
    files = []
    for index, manifest in enumerate(manifests(config)):
        kind = str(manifest["kind"]).lower()
        name = manifest["metadata"]["name"]
        path = PurePosixPath(FOLDER) / f"{index:02d}-{kind}-{name}.yaml"
        files.append(RenderedFile(path, header(source) + to_yaml(manifest)))
    return files


def read_rendered(folder: Path) -> list[Any]:
    """Every mapping in every YAML document under `folder` (multi-document files included)."""
    docs: list[Any] = []
    for path in sorted(folder.rglob("*.y*ml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return docs


TARGET = Target(
    name=FOLDER,
    render=render,
    objects=manifests,
    read_rendered=read_rendered,
    rules=RULES,
    prerequisites=lambda config: prerequisites(config.workload),
    kill_deadline_name="terminationGracePeriodSeconds",
)
