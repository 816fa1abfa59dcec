"""ruff and mypy (strict) stay clean over the library, the worker and the tests' support code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO

BIN = REPO / ".venv" / "bin"


def test_ruff_clean() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean(tmp_path: Path) -> None:
    # components/ is installed as `killsafe` (and systemd/ as `killsafe.systemd`) through setuptools'
    # editable import hook, which mypy cannot follow; a folder of symlinks gives mypy the real names.
    package = tmp_path / "killsafe"
    package.mkdir()
    for entry in (REPO / "components").iterdir():
        (package / entry.name).symlink_to(entry)
    (package / "systemd").symlink_to(REPO / "systemd")
    env = {**os.environ, "MYPYPATH": f"{tmp_path}{os.pathsep}{REPO / 'worker_image' / 'src'}"}
    result = subprocess.run(
        [str(BIN / "mypy"), "--cache-dir", str(tmp_path / "cache"), "-p", "killsafe", "-p", "killsafe_worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lock_file_is_current() -> None:
    result = subprocess.run(
        [str(REPO / ".tools" / "bin" / "uv"), "lock", "--check", "--offline"],
        cwd=REPO,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
