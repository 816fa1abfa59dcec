"""Every manifest of every example stack and variant passes the real third-party validators.

- kubernetes-validate --strict (the API's OpenAPI schemas, unknown fields rejected) against the
  oldest version whose defaults accept everything we emit (1.30: preStop `sleep` is on by default)
  and current ones;
- checkov (offline, --skip-download) with zero failed checks, one run per variant; its only skips
  are the justified annotations from `killsafe.kubernetes.suppressions`, each one of those.

Negative controls prove each validator would catch a broken manifest here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from killsafe.kubernetes.build import build_manifests
from tests.conftest import REPO
from tests.kubernetes.k8s_specs import all_variant_manifests, make_spec, write_per_object

BIN = REPO / ".venv" / "bin"
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0", "1.37.0")
ALLOWED_SKIPS = {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_21", "CKV2_K8S_6"}
CORE_API_VERSIONS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing; run bash .ci/bootstrap (it is a dev dependency in uv.lock)")
    return str(path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every variant, one file per object, in one folder per variant (validators run once over all)."""
    root = tmp_path_factory.mktemp("manifests")
    for variant, manifests in all_variant_manifests().items():
        # Custom resources (PodMonitor, ScaledObject, ...) are validated against their CRD schemas in
        # tests/kubernetes/test_monitoring_autoscaling.py: kubernetes-validate only warns on them.
        write_per_object([m for m in manifests if m["apiVersion"] in CORE_API_VERSIONS], root / variant)
    return root


def _kubernetes_validate(files: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_schema_strict(rendered: Path, version: str) -> None:
    files = sorted(rendered.rglob("*.yaml"))
    assert len(files) > 50
    result = _kubernetes_validate(files, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout


def test_schema_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    worker = next(m for m in build_manifests(make_spec()) if m["metadata"]["name"] == "emails-worker")
    worker["spec"]["template"]["spec"]["containers"][0]["terminationGracePeriod"] = 30
    [path] = write_per_object([worker], tmp_path)
    assert _kubernetes_validate([path], KUBERNETES_VERSIONS[-1]).returncode != 0


def test_prestop_sleep_needs_kubernetes_1_30_or_later(tmp_path: Path) -> None:
    """The web pod's preStop `sleep` action is unknown to 1.28's schema: the minimum version is real."""
    web = next(
        m for m in build_manifests(make_spec()) if m["metadata"]["name"] == "emails-web" and m["kind"] == "Deployment"
    )
    [path] = write_per_object([web], tmp_path)
    result = _kubernetes_validate([path], "1.28.0")
    assert result.returncode != 0 and "sleep" in result.stdout + result.stderr


def test_older_cluster_fallback_validates_against_its_minimum_version(tmp_path: Path) -> None:
    """kubernetes.min_version 1.27 with web.prestop_seconds 0 (README, Older clusters) is valid on 1.27."""
    spec = make_spec(web={"prestop_seconds": 0}, kubernetes={"min_version": "1.27"})
    paths = write_per_object([m for m in build_manifests(spec) if m["apiVersion"] in CORE_API_VERSIONS], tmp_path)
    result = _kubernetes_validate(paths, "1.27.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout


def _checkov_start(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [_tool("checkov"), "--framework", "kubernetes", "--skip-download", "-o", "json", "-d", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkov_results(proc: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), stdout[-2000:] + stderr[-2000:]
    report = json.loads(stdout)
    assert isinstance(report, dict) and report["check_type"] == "kubernetes", stdout[:500]
    return dict(report["results"])


def _checkov(directory: Path) -> dict[str, Any]:
    return _checkov_results(_checkov_start(directory))


def test_checkov_zero_failed_checks_and_only_justified_skips(rendered: Path) -> None:
    """One checkov run per variant (concurrently): its graph checks (CKV2_K8S_6, pods without a
    NetworkPolicy) match policies by label across files, so variants must not share a run."""
    runs = {variant.name: _checkov_start(variant) for variant in sorted(rendered.iterdir())}
    skipped: set[str] = set()
    for variant, proc in runs.items():
        results = _checkov_results(proc)
        failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results["failed_checks"]]
        assert failed == [], variant
        assert len(results["passed_checks"]) > 100, variant
        assert "CKV2_K8S_6" in {c["check_id"] for c in results["passed_checks"] + results["skipped_checks"]}
        for check in results["skipped_checks"]:
            skipped.add(check["check_id"])
            reason = check["check_result"]["suppress_comment"]
            assert "; " in reason and len(reason) > 40, f"a suppression must say why and how to fix: {reason!r}"
    assert skipped == ALLOWED_SKIPS  # the variants exercise every justified case, and only those


def test_checkov_flags_a_weakened_pod(tmp_path: Path) -> None:
    worker = next(m for m in build_manifests(make_spec()) if m["metadata"]["name"] == "emails-worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["resources"]["limits"]
    (tmp_path / "worker.yaml").write_text(yaml.safe_dump(worker))
    failed = {c["check_id"] for c in _checkov(tmp_path)["failed_checks"]}
    assert {"CKV_K8S_22", "CKV_K8S_11", "CKV_K8S_13"} <= failed
