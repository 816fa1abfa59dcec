"""`killsafe lint` over the corpus: each bad case reports exactly its declared errors, good ones none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from killsafe.checks import Finding
from killsafe.lint import lint_paths
from tests.conftest import REPO

CORPUS = Path(__file__).parent / "corpus"
KILLSAFE = str(REPO / ".venv" / "bin" / "killsafe")
CASES = sorted(p for kind in ("good", "bad") for p in (CORPUS / kind).iterdir() if p.is_dir())


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KILLSAFE, "lint", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def _files(case: Path) -> list[Path]:
    return sorted(p for p in case.iterdir() if p.name != "expected.yaml")


def _keys(findings: list[Finding], level: str) -> list[tuple[str, str]]:
    return sorted((f.rule, f.path) for f in findings if f.level == level)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_case_reports_its_expected_findings(case: Path) -> None:
    expected = yaml.safe_load((case / "expected.yaml").read_text()) or {}
    _, findings = lint_paths(_files(case))
    want_errors = sorted((e["rule"], e["path"]) for e in expected.get("errors") or [])
    assert _keys(findings, "error") == want_errors
    assert set(_keys(findings, "warning")) >= {(w["rule"], w["path"]) for w in expected.get("warnings") or []}
    for f in findings:
        assert f.file and f.obj and f.path and f.fix, f


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_exit_code_is_1_on_errors_only(case: Path) -> None:
    result = lint(*map(str, _files(case)))
    assert result.returncode == (1 if case.parent.name == "bad" else 0), result.stdout + result.stderr


def test_a_bare_deployment_reports_grace_probes_and_memory_and_exits_1() -> None:
    path = CORPUS / "bad" / "bare-deployment" / "worker.yaml"
    result = lint(str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for needle in ("terminationGracePeriodSeconds is not set", "has no livenessProbe", "has no memory limit"):
        line = next(line for line in lines if needle in line)
        assert line.startswith(f"{path}: Deployment/emails-worker: spec.template.spec.")
        assert " error: " in line and "Fix: " in line


def test_warnings_alone_exit_0_and_say_so(tmp_path: Path) -> None:
    unit = tmp_path / "sync.service"
    unit.write_text("[Service]\nExecStart=/srv/app/bin/gunicorn app:wsgi\nKillMode=process\n")
    result = lint(str(unit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KS001 warning" in result.stdout
    assert "no errors, 2 warning(s)" in result.stdout and "warnings alone exit 0" in result.stdout


INVALID = sorted((CORPUS / "invalid").iterdir())


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_bad_input_exits_2_with_one_line_naming_the_file(path: Path) -> None:
    result = lint(str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {path}: ")


def test_missing_and_undecodable_files_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert lint(str(missing)).stderr == f"error: {missing}: no such file or folder\n"
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = lint(str(binary))
    assert result.returncode == 2 and result.stderr.startswith(f"error: {binary}: cannot read")


def test_a_folder_skips_files_lint_does_not_read(tmp_path: Path) -> None:
    (tmp_path / "install.sh").write_text("#!/bin/sh\n")
    (tmp_path / "values.yaml").write_text("replicaCount: 2\n")
    (tmp_path / "worker.yaml").write_text((CORPUS / "good" / "k8s-list" / "list.yaml").read_text())
    result = lint(str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"skipped {tmp_path / 'install.sh'}" in result.stderr
    assert f"skipped {tmp_path / 'values.yaml'}" in result.stderr
    assert "clean (1 file(s), 1 object(s))" in result.stdout


@pytest.mark.parametrize("stack", ["dev", "ecs", "vm"])
def test_killsafes_own_rendered_stacks_lint_clean(tmp_path: Path, stack: str) -> None:
    rendered = subprocess.run(
        [KILLSAFE, "render", "--stack", stack, "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO
    )
    assert rendered.returncode == 0, rendered.stderr
    (target,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    result = lint(str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " error: " not in result.stdout
    read, findings = lint_paths([target])
    assert read.objects and not [f for f in findings if f.level == "error"]
    # every rendered file of the kinds lint reads was read, not skipped
    kinds = {".yaml", ".json", ".service", ".target", ".env", ".conf"}
    not_objects = {"prometheus", "grafana"}  # systemd's Prometheus rules/scrape configs and Grafana JSON
    lintable = [p for p in target.rglob("*") if p.suffix in kinds and p.parent.name not in not_objects]
    assert sorted(map(str, lintable)) == sorted(read.files)
    named = lint(*read.files)  # the same files named one by one
    assert named.returncode == 0, named.stdout + named.stderr
