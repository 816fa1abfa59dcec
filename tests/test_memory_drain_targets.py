"""Issue 11.2 on every target: the worker gets its memory limit and drain threshold, a bad threshold is
refused with its config path, and each platform restarts a worker that exits 4 (memory pressure)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from killsafe import contract
from killsafe.config import load_stack
from killsafe.ecs.build import build_requests
from killsafe.kubernetes.build import build_manifests
from killsafe.systemd.build import build_files
from killsafe.systemd.unitfile import parse_unit
from tests.conftest import REPO
from tests.test_config_errors import KILLSAFE, _with, _write_stack


def test_a_bad_threshold_names_its_path_and_the_range(tmp_path: Path) -> None:
    for value, expected in ((30, "30 must be >= 50"), (120, "120 must be <= 100")):
        stacks = tmp_path / f"stacks-{value}"
        _write_stack(stacks, _with("worker.memory_drain_percent", value))
        result = subprocess.run(
            [KILLSAFE, "check", "--stack", "bad", "--stacks-dir", str(stacks)], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert f"killsafe:workload.worker.memory_drain_percent: {expected}" in result.stderr


def test_kubernetes_restarts_the_container_whatever_its_exit_code() -> None:
    spec = load_stack("prod", REPO / "stacks").workload
    [deployment] = [
        m for m in build_manifests(spec) if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-worker")
    ]
    pod = deployment["spec"]["template"]["spec"]
    assert pod.get("restartPolicy", "Always") == "Always"
    [container] = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env[contract.ENV_MEMORY_LIMIT_MIB] == str(spec.worker.memory_mib)
    assert container["resources"]["limits"]["memory"] == f"{spec.worker.memory_mib}Mi", "the same limit"
    assert env[contract.ENV_MEMORY_DRAIN_PERCENT] == str(spec.worker.drain_percent)


def test_ecs_replaces_a_task_whose_essential_worker_exits() -> None:
    spec = load_stack("ecs", REPO / "stacks").workload
    [task] = [
        r.params
        for r in build_requests(spec)
        if r.operation == "RegisterTaskDefinition" and r.params["family"].endswith("-worker")
    ]
    [container] = task["containerDefinitions"]
    assert container["essential"] is True, "the task stops with the worker; the service starts a new one"
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert env[contract.ENV_MEMORY_LIMIT_MIB] == str(container["memory"])
    assert env[contract.ENV_MEMORY_DRAIN_PERCENT] == str(spec.worker.drain_percent)


def test_systemd_restarts_exit_4_and_drains_before_memory_high_throttles() -> None:
    spec = load_stack("vm", REPO / "stacks").workload
    files = {f.path.name: f.content for f in build_files(spec, "stacks/Pulumi.vm.yaml")}
    service = parse_unit(files["emails-worker@.service"]).sections["Service"]
    assert service["Restart"] == ["always"]
    for key in ("RestartPreventExitStatus", "SuccessExitStatus"):
        assert key not in service, f"{key} could keep a worker that exited {contract.EXIT_MEMORY_PRESSURE} down"
    env = {
        name: value.strip('"')
        for name, _, value in (line.partition("=") for line in files["worker.env"].splitlines())
        if value and not name.startswith("#")
    }
    assert env[contract.ENV_MEMORY_LIMIT_MIB] == str(spec.worker.memory_mib)
    memory_high = int(service["MemoryHigh"][0].removesuffix("M"))
    drain_mib = spec.worker.memory_mib * int(env[contract.ENV_MEMORY_DRAIN_PERCENT]) / 100
    assert drain_mib < memory_high, "the worker drains before MemoryHigh starts throttling it"
