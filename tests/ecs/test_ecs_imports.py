"""pulumi-aws is heavy and optional: the CLI, a Kubernetes render and even an ECS render never import it.

Acceptance 5. Each check runs a fresh interpreter, so modules other tests imported cannot hide an import.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO

PYTHON = str(REPO / ".venv" / "bin" / "python")
AWS_MODULES = ("pulumi_aws", "botocore", "boto3")


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, *args, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_importing_the_cli_imports_no_pulumi_aws() -> None:
    result = _python("import killsafe.cli", "-X", "importtime")
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "killsafe.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in AWS_MODULES], "the CLI must not import AWS code"


RENDER_AND_LIST = """
import sys
from killsafe.cli import app
try:
    app(["render", "--stack", {stack!r}, "--out", {out!r}], standalone_mode=False)
finally:
    print("\\n".join(sorted(sys.modules)))
"""


def _modules_after_render(stack: str, out: Path) -> set[str]:
    result = _python(RENDER_AND_LIST.format(stack=stack, out=str(out)))
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_a_kubernetes_render_imports_no_aws_code(tmp_path: Path) -> None:
    modules = _modules_after_render("dev", tmp_path)
    assert "killsafe.kubernetes.target" in modules
    assert not {m for m in modules if m.split(".")[0] in AWS_MODULES or m.startswith("killsafe.ecs")}


def test_an_ecs_render_imports_no_pulumi_either(tmp_path: Path) -> None:
    modules = _modules_after_render("ecs", tmp_path)
    assert "killsafe.ecs.target" in modules
    assert not {m for m in modules if m.split(".")[0] in (*AWS_MODULES, "pulumi", "pulumi_random")}


BLOCK_PULUMI_AWS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "pulumi_aws":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import pulumi
try:
    import killsafe.ecs.program
except pulumi.RunError as err:
    print(err)
"""


def test_without_the_aws_extra_the_program_says_how_to_install_it() -> None:
    result = _python(BLOCK_PULUMI_AWS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "target ecs needs the AWS extra: pip install 'killsafe[aws]' (in this repository: bash .ci/bootstrap)"
    )
