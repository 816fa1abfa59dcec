"""The worker image, built offline with buildah and run with podman: real build, real containers, real Redis.

How to run (root; buildah, podman, skopeo, runc and mmdebstrap from .ci/system-deps):

    .venv/bin/pytest tests/image -q -s          # -s shows the build timings and the image size

The module fixture runs tests/image/build_image.sh, which needs no registry and no Docker daemon:
1. base: mmdebstrap bookworm (this machine's apt sources) -> python3 + venv only, no shell ->
   `podman import` as localhost/killsafe-base (cached under .cache/image, keyed by the recipe);
2. wheels: worker_image/requirements.lock downloaded with hashes by the base's own python3 (cached,
   keyed by the lock file), so markers such as `python_full_version < '3.11.3'` (async-timeout) are
   decided by the interpreter that will import the packages;
3. `buildah bud --pull=never --network=none` of worker_image/Dockerfile with BASE_IMAGE and
   PIP_NO_INDEX/PIP_FIND_LINKS build args and the wheels mounted at /wheels.
Set KILLSAFE_IMAGE_CACHE to build somewhere else (CI starts without it and pays the bootstrap once).
By hand: `tests/image/build_image.sh`, then export CONTAINERS_CONF/CONTAINERS_STORAGE_CONF as that
script's header says and use `podman run ... localhost/killsafe-worker:test`.

Every container runs the way Kubernetes runs it: --user 10001, --read-only, --cap-drop ALL,
no-new-privileges, host network to reach the test's redis-server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue
from packaging.markers import Marker
from packaging.requirements import Requirement

from killsafe_worker import contract
from killsafe_worker.handlers import idempotency_marker_key
from tests.conftest import REPO, RedisServer, free_port, require, require_root

IMAGE = "localhost/killsafe-worker:test"
BUILD_SCRIPT = REPO / "tests" / "image" / "build_image.sh"
REQUIREMENTS_LOCK = REPO / "worker_image" / "requirements.lock"
RUNTIME_USER = "10001:10001"
HARDENING = ("--user", RUNTIME_USER, "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
QUEUE = "imgq"


@dataclass(frozen=True)
class Podman:
    """podman/skopeo with the build's own containers.conf and storage.conf, never the machine's."""

    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [require("podman"), *args], env=self.env, check=check, capture_output=True, text=True, timeout=timeout
        )

    def skopeo(self, *args: str) -> str:
        return subprocess.run(
            [require("skopeo"), *args], env=self.env, check=True, capture_output=True, text=True, timeout=60
        ).stdout

    def python(self, code: str, *extra: str) -> str:
        """Run python3 in a fresh, hardened container of the image (bypassing the worker command)."""
        return self.run("run", "--rm", *HARDENING, *extra, IMAGE, "python3", "-c", code).stdout

    def exit_code(self, name: str) -> int:
        return int(self.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())

    def logs(self, name: str) -> str:
        result = self.run("logs", name, check=False)
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Build the image once per module (cold ~40 s, cached ~15 s) and hand out the podman environment."""
    require_root("buildah/podman with their own root storage, runc and mmdebstrap need root")
    for tool in ("buildah", "podman", "skopeo", "runc", "mmdebstrap"):
        require(tool)
    cache = Path(os.environ.get("KILLSAFE_IMAGE_CACHE", REPO / ".cache" / "image")).resolve()
    env = {**os.environ, "KILLSAFE_IMAGE_CACHE": str(cache)}
    started = time.monotonic()
    build = subprocess.run(
        [str(BUILD_SCRIPT), IMAGE], env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    print(f"\n{build.stderr}build_image.sh took {time.monotonic() - started:.1f}s")
    assert build.returncode == 0, f"image build failed:\n{build.stdout}\n{build.stderr}"
    return Podman(
        {
            **env,
            "CONTAINERS_CONF": str(cache / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(cache / "storage.conf"),
        }
    )


@pytest.fixture
def container(podman: Podman) -> Iterator[Callable[..., str]]:
    """Start detached containers of the image (hardened, host network); all removed at teardown."""
    names: list[str] = []

    def start(*command: str, env: dict[str, str]) -> str:
        name = f"killsafe-test-{uuid.uuid4().hex[:10]}"
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        podman.run("run", "-d", "--name", name, "--network", "host", *HARDENING, *env_args, IMAGE, *command)
        names.append(name)
        return name

    yield start
    for name in names:
        podman.run("rm", "--force", "--time", "0", name, check=False)


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _wait_until(
    predicate: Callable[[], bool], what: str, diagnostics: Callable[[], str], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diagnostics()}")


def _job_state(redis_url: str, job_id: str) -> str:
    async def read() -> str:
        queue = Queue(QUEUE, {"connection": redis_url})
        try:
            return str(await queue.getJobState(job_id))
        finally:
            await queue.close()

    return asyncio.run(read())


def _enqueue(redis_url: str, name: str, data: dict[str, Any], job_id: str) -> None:
    async def add() -> None:
        queue = Queue(QUEUE, {"connection": redis_url})
        try:
            await queue.add(name, data, {"jobId": job_id})
        finally:
            await queue.close()

    asyncio.run(add())


# --- the image as built -----------------------------------------------------------------------------


def test_config_runs_as_numeric_non_root_with_exec_form_commands_and_healthcheck(podman: Podman) -> None:
    config = json.loads(podman.skopeo("inspect", "--config", "--raw", f"containers-storage:{IMAGE}"))["config"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0, config["User"]
    assert config["User"] == RUNTIME_USER  # the Kubernetes manifests' runAsUser/runAsGroup
    assert config["Entrypoint"][0] == "dumb-init"
    assert config["Cmd"] == ["killsafe-worker"]
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "killsafe-worker", "healthcheck"]  # exec form, no shell
    assert config["StopSignal"] == contract.STOP_SIGNAL
    ports = (contract.HEALTH_PORT, contract.WEB_PORT, contract.DASHBOARD_PORT)
    assert {f"{port}/tcp" for port in ports} <= set(config["ExposedPorts"])
    assert contract.DASHBOARD_COMMAND in config["Labels"]["org.opencontainers.image.description"]
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    layers = podman.run("history", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE).stdout
    print(f"\nimage {IMAGE}: {size / 1e6:.1f} MB (Debian python3 base + worker venv)\n{layers}")


def test_image_has_no_shell_so_nothing_depends_on_one(podman: Podman) -> None:
    """The test base has no /bin/sh: the build, the entrypoint and the healthcheck all ran without one."""
    found = podman.python("import shutil; print([shutil.which(s) for s in ('sh', 'bash', 'dash')])")
    assert found.strip() == "[None, None, None]"


def test_installs_exactly_the_locked_distributions_and_no_pulumi(podman: Podman) -> None:
    listing = podman.python(
        "import importlib.metadata as m, importlib.util as u, json, platform, glob;"
        "print(json.dumps({'dists': sorted({d.metadata['Name'].lower(): d.version for d in m.distributions()}.items()),"
        " 'python': platform.python_version(), 'pulumi': u.find_spec('pulumi') is not None,"
        " 'node_modules': glob.glob('/opt/killsafe/lib/python3*/site-packages/node_modules')}))"
    )
    found = json.loads(listing)
    installed = {name.replace("_", "-"): version for name, version in found["dists"]}
    environment = {"python_full_version": found["python"], "python_version": found["python"].rsplit(".", 1)[0]}
    locked: dict[str, str] = {}
    for line in REQUIREMENTS_LOCK.read_text().splitlines():
        if line[:1].isalnum():
            requirement = Requirement(line.rstrip(" \\"))
            if requirement.marker is None or Marker(str(requirement.marker)).evaluate(environment):
                locked[requirement.name.lower()] = str(requirement.specifier).removeprefix("==")
    assert installed == {**locked, "killsafe-worker": installed.get("killsafe-worker", "missing")}
    assert found["pulumi"] is False
    assert found["node_modules"] == []
    print(f"\nimage python {found['python']}: {len(installed)} distributions: {sorted(installed)}")


def test_dumb_init_reaps_orphaned_grandchildren(podman: Podman) -> None:
    """An orphan is re-parented to PID 1; without a reaping init it would stay a zombie."""
    script = (
        "import os, subprocess, time\n"
        "orphan = subprocess.run(['python3', '-c', 'import os, time\\n"
        "pid = os.fork()\\nif pid: print(pid)\\nelse: time.sleep(0.5)'],"
        " capture_output=True, text=True, check=True).stdout.strip()\n"
        "time.sleep(2)\n"
        "zombies = [p for p in os.listdir('/proc') if p.isdigit()"
        " and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] == 'Z']\n"
        "print(orphan, os.path.exists(f'/proc/{orphan}'), zombies, open('/proc/1/comm').read().strip())\n"
    )
    orphan, still_exists, zombies, pid1 = podman.python(script).split(" ", 3)
    assert orphan.isdigit()
    assert pid1.strip() == "dumb-init"
    assert (still_exists, zombies) == ("False", "[]")


def test_healthcheck_fails_when_nothing_answers(podman: Podman) -> None:
    """The HEALTHCHECK command can fail: no worker running, so unhealthy (exit 1)."""
    result = podman.run(
        "run",
        "--rm",
        *HARDENING,
        "-e",
        f"{contract.ENV_HEALTH_PORT}={free_port()}",
        IMAGE,
        "killsafe-worker",
        "healthcheck",
        "--timeout",
        "1",
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr


# --- running it ------------------------------------------------------------------------------------


def _worker_env(redis_server: RedisServer, health_port: int) -> dict[str, str]:
    return {
        contract.ENV_REDIS_URL: redis_server.url,
        contract.ENV_QUEUES: QUEUE,
        contract.ENV_HEALTH_PORT: str(health_port),
        contract.ENV_LOG_LEVEL: "INFO",
    }


@pytest.mark.parametrize("job_name", ["sleep", "cpu"])  # cpu: the job runs in a child process
def test_podman_stop_drains_the_in_flight_job(
    podman: Podman, container: Callable[..., str], redis_server: RedisServer, job_name: str
) -> None:
    """SIGTERM reaches the worker through dumb-init; the job (and its child) finish; exit 0, one side effect."""
    health_port = free_port()
    name = container(env=_worker_env(redis_server, health_port))
    ready = f"http://127.0.0.1:{health_port}{contract.READY_PATH}"
    _wait_until(lambda: _http_status(ready) == 200, "the worker's readiness", diagnostics=lambda: podman.logs(name))
    healthcheck = podman.run("healthcheck", "run", name, check=False)
    assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr + podman.logs(name)

    job_id = f"drain-{uuid.uuid4().hex[:8]}"
    _enqueue(redis_server.url, job_name, {"seconds": 4}, job_id)
    _wait_until(
        lambda: _job_state(redis_server.url, job_id) == "active",
        "the job to start",
        diagnostics=lambda: podman.logs(name),
    )
    time.sleep(1)  # SIGTERM lands ~1 s into the 4 s job, while it is still running:
    assert _job_state(redis_server.url, job_id) == "active"
    stop_started = time.monotonic()
    podman.run("stop", "--time", "30", name, timeout=60)
    print(f"\npodman stop returned after {time.monotonic() - stop_started:.2f}s (about 3 s of the job remained)")

    logs = podman.logs(name)
    assert podman.exit_code(name) == 0, logs
    assert _job_state(redis_server.url, job_id) == "completed", logs
    markers = redis_server.cli("KEYS", f"{contract.IDEMPOTENCY_KEY_PREFIX}*").split()
    # No explicit idempotency key: the marker names this job instance, `<id>@<creation ms>`.
    assert len(markers) == 1 and markers[0].startswith(idempotency_marker_key(QUEUE, job_id) + "@"), (markers, logs)
    assert redis_server.cli("LLEN", contract.SIDE_EFFECTS_LIST).strip() == "1", logs


def test_web_command_from_the_same_image_enqueues_a_job(
    podman: Podman, container: Callable[..., str], redis_server: RedisServer
) -> None:
    port = free_port()
    env = {
        contract.ENV_REDIS_URL: redis_server.url,
        contract.ENV_QUEUES: QUEUE,
        contract.ENV_WEB_PORT: str(port),
        contract.ENV_HEALTH_PORT: str(port),  # the image's HEALTHCHECK then probes the web app's /livez
    }
    name = container("killsafe-web", env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_until(
        lambda: _http_status(base + contract.READY_PATH) == 200,
        "the web app's readiness",
        diagnostics=lambda: podman.logs(name),
    )
    request = urllib.request.Request(
        base + "/jobs",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"name": "echo", "data": {"n": 1}, "idempotency_key": "image-web-1"}).encode(),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        body = json.loads(response.read())
    assert body["id"] == "image-web-1"
    assert _job_state(redis_server.url, "image-web-1") == "waiting"
    healthcheck = podman.run("healthcheck", "run", name, check=False)
    assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr + podman.logs(name)
    podman.run("stop", "--time", "30", name, timeout=60)
    assert podman.exit_code(name) == 0, podman.logs(name)


def test_dashboard_command_from_the_same_image_serves_behind_auth(
    podman: Podman, container: Callable[..., str], redis_server: RedisServer
) -> None:
    """`killsafe-dashboard` as the Kubernetes Deployment runs it (args after dumb-init, read-only, UID
    10001): probes answer unauthenticated, pages do not, and the image's HEALTHCHECK covers it too."""
    port = free_port()
    env = {
        contract.ENV_REDIS_URL: redis_server.url,
        contract.ENV_QUEUES: QUEUE,
        contract.ENV_DASHBOARD_PORT: str(port),
        contract.ENV_DASHBOARD_AUTH: "trusted-header",
        contract.ENV_DASHBOARD_USER_HEADER: "X-Forwarded-User",
        contract.ENV_HEALTH_PORT: str(port),  # the image's HEALTHCHECK then probes the dashboard's /livez
    }
    name = container(contract.DASHBOARD_COMMAND, env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_until(
        lambda: _http_status(base + contract.READY_PATH) == 200,
        "the dashboard's readiness",
        diagnostics=lambda: podman.logs(name),
    )
    assert _http_status(base + contract.LIVE_PATH) == 200
    assert _http_status(base + "/") == 401, "no identity header: refused"
    request = urllib.request.Request(base + "/", headers={"X-Forwarded-User": "alice"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and QUEUE in response.read().decode()
    healthcheck = podman.run("healthcheck", "run", name, check=False)
    assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr + podman.logs(name)
    podman.run("stop", "--time", "30", name, timeout=60)
    assert podman.exit_code(name) == 0, podman.logs(name)
