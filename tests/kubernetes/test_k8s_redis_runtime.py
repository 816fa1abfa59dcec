"""The in-cluster Redis pod's real start script, redis.conf and readiness probe, run with a real
redis-server and the real shell: only the container paths and the port are mapped onto a tmp dir.

Proves what the manifest alone cannot: the password is applied from the mounted file yet never
appears in the process arguments, redis-server is PID 1 of the script (exec, so it gets SIGTERM
itself and fsyncs the AOF), the queue-safety settings are in force, and the probe tells a healthy,
password-protected Redis from a wrong password.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from killsafe import contract
from killsafe.kubernetes.build import build_manifests
from killsafe.kubernetes.redis import CONFIG_DIR, DATA_DIR
from tests.conftest import free_port, require
from tests.kubernetes.k8s_specs import container, find, make_spec

PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


class Mapped:
    """Maps the container's absolute paths and port onto a test folder and a free port."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.paths = {
            CONFIG_DIR: root / "config",
            DATA_DIR: root / "data",
            contract.SECRETS_MOUNT_DIR: root / "secrets",
        }
        for path in self.paths.values():
            path.mkdir(parents=True)

    def __call__(self, text: str) -> str:
        for inside, outside in self.paths.items():
            text = text.replace(inside, str(outside))
        return text.replace(str(contract.REDIS_PORT), str(self.port)).replace("bind * -::*", "bind 127.0.0.1")


@pytest.fixture
def redis_pod(tmp_path: Path) -> Iterator[tuple[Mapped, subprocess.Popen[bytes], list[str], list[str]]]:
    require("redis-server")
    require("redis-cli")
    manifests = build_manifests(make_spec(redis={"memory_mib": 200}))
    mapped = Mapped(tmp_path)
    conf = find(manifests, "ConfigMap", "emails-redis-config")["data"]["redis.conf"]
    (mapped.paths[CONFIG_DIR] / "redis.conf").write_text(mapped(conf))
    (mapped.paths[contract.SECRETS_MOUNT_DIR] / contract.REDIS_PASSWORD_SECRET_KEY).write_text(PASSWORD)
    redis = container(manifests, "StatefulSet", "emails-redis")
    probe = [mapped(part) for part in redis["readinessProbe"]["exec"]["command"]]
    command = [mapped(part) for part in redis["command"]]
    proc = _start(command, probe, tmp_path)
    try:
        yield mapped, proc, probe, command
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _start(command: list[str], probe: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    """Run the pod's start script and wait, as the kubelet would, for the readiness probe."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server exited or the readiness probe never passed within 30 s")
        time.sleep(0.1)
    return proc


def _cli(mapped: Mapped, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(mapped.port), *args],
        env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()


def test_redis_runs_the_rendered_config_with_the_password_from_the_file(redis_pod) -> None:
    mapped, proc, _, _ = redis_pod
    unauthenticated = subprocess.run(
        ["redis-cli", "-p", str(mapped.port), "ping"], capture_output=True, text=True, timeout=10, check=False
    )
    assert "NOAUTH" in unauthenticated.stdout + unauthenticated.stderr
    assert _cli(mapped, "ping") == "PONG"
    assert _cli(mapped, "config", "get", "maxmemory-policy").splitlines()[1] == "noeviction"
    assert _cli(mapped, "config", "get", "appendonly").splitlines()[1] == "yes"
    assert _cli(mapped, "config", "get", "appendfsync").splitlines()[1] == "everysec"
    assert _cli(mapped, "config", "get", "maxmemory").splitlines()[1] == str(140 * 1024 * 1024)  # 70% of 200Mi
    assert _cli(mapped, "config", "get", "dir").splitlines()[1] == str(mapped.paths[DATA_DIR])
    # exec: the script's process is redis-server itself, and no argument carries the password
    assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "redis-server"
    assert PASSWORD not in Path(f"/proc/{proc.pid}/cmdline").read_text()


def test_sigterm_reaches_redis_and_the_aof_survives_a_restart(redis_pod, tmp_path: Path) -> None:
    mapped, proc, probe, command = redis_pod
    _cli(mapped, "set", "bull:emails:job", "kept")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0  # a graceful shutdown, not a kill
    restarted = _start(command, probe, tmp_path)
    try:
        assert _cli(mapped, "get", "bull:emails:job") == "kept"
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)


def test_readiness_probe_fails_with_a_wrong_password(redis_pod) -> None:
    mapped, _, probe, _ = redis_pod
    assert subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
    (mapped.paths[contract.SECRETS_MOUNT_DIR] / contract.REDIS_PASSWORD_SECRET_KEY).write_text("wrong")
    assert subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode != 0
