"""Golden manifests for each example stack, compared structurally (parsed YAML, not text).

The golden files are the reviewable record of what each stack deploys: a change to the builder shows
up as a diff in tests/golden/kubernetes/<stack>.yaml. After an intended change, regenerate them with

    KILLSAFE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/kubernetes/test_k8s_golden.py

and review the diff before committing.
"""

from __future__ import annotations

import os

import pytest
import yaml

from killsafe.kubernetes.build import build_manifests
from tests.conftest import REPO
from tests.kubernetes.k8s_specs import STACKS, stack_spec

GOLDEN_DIR = REPO / "tests" / "golden" / "kubernetes"
UPDATE = os.environ.get("KILLSAFE_UPDATE_GOLDEN") == "1"


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (redis.conf, the Redis start script) as literal blocks, for reviewable diffs."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _str)


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_match_golden(stack: str) -> None:
    manifests = build_manifests(stack_spec(stack))
    path = GOLDEN_DIR / f"{stack}.yaml"
    if UPDATE:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Generated from stacks/Pulumi.{stack}.yaml by tests/kubernetes/test_k8s_golden.py "
            "(KILLSAFE_UPDATE_GOLDEN=1)\n"
        )
        path.write_text(header + yaml.dump_all(manifests, Dumper=_ReadableDumper, sort_keys=False))
    assert path.is_file(), f"{path} is missing; generate it with KILLSAFE_UPDATE_GOLDEN=1"
    golden = list(yaml.safe_load_all(path.read_text()))
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [
        (m["kind"], m["metadata"]["name"]) for m in golden
    ]
    for built, expected in zip(manifests, golden, strict=True):
        assert built == expected, f"{built['kind']}/{built['metadata']['name']} differs from {path}"
