"""Issue 7.2: the probes, derived once (killsafe.kubernetes.probes), never restart a worker because
Redis is down, at start or later.

The built probes are checked field by field; then a small kubelet (startup probe first, then
readiness and liveness, each at its own period, timeout and failure threshold, exactly as built)
probes a real `killsafe-worker` started with the built container's args and env while a real Redis is
down at start, up, and down again for longer than the whole liveness window.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from killsafe import contract
from killsafe.kubernetes import probes
from killsafe.kubernetes.build import build_manifests
from killsafe.kubernetes.labels import COMPONENT
from tests.conftest import RedisServer, free_port, require
from tests.kubernetes.k8s_specs import all_variant_manifests, container, env_of, make_spec
from tests.worker.conftest import INHERIT_NOT, WORKER_BIN, enqueue_many


def _window(probe: dict[str, Any]) -> int:
    return int(probe["periodSeconds"] * probe["failureThreshold"])


def test_startup_probe_answers_within_seconds_and_scales_with_the_cpu_limit() -> None:
    """The old startup probe (every 5 s, sized for the worker's Redis wait) covered nothing startup
    does; now it notices a listening process within 2 s and allows for CPU-throttled imports."""
    for cpu, window in ((1000, 30), (100, 30), (50, 60), (10, 300)):
        worker = container(build_manifests(make_spec(worker={"cpu_millicores": cpu})), "Deployment", "emails-worker")
        startup = worker["startupProbe"]
        assert startup["httpGet"]["path"] == contract.LIVE_PATH
        assert startup["periodSeconds"] == 2
        assert _window(startup) == window == probes.startup_window_seconds(cpu)
    web = container(build_manifests(make_spec(web={"cpu_millicores": 50})), "Deployment", "emails-web")
    assert _window(web["startupProbe"]) == 60


def test_liveness_window_covers_the_job_lock_and_never_looks_at_redis() -> None:
    for lock, window in ((30, 30), (60, 60), (125, 130)):
        manifests = build_manifests(make_spec(worker={"lock_duration_seconds": lock}))
        liveness = container(manifests, "Deployment", "emails-worker")["livenessProbe"]
        assert liveness["httpGet"]["path"] == contract.LIVE_PATH
        assert _window(liveness) == window >= lock
        assert liveness["timeoutSeconds"] < liveness["periodSeconds"]
    for variant, manifests in all_variant_manifests().items():
        for m in manifests:
            if m["kind"] != "Deployment" or m["metadata"]["labels"][COMPONENT] not in ("web", "worker"):
                continue
            [c] = m["spec"]["template"]["spec"]["containers"]
            assert c["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH, variant
            for restarting in ("startupProbe", "livenessProbe"):
                assert c[restarting]["httpGet"]["path"] == contract.LIVE_PATH, f"{variant} {restarting} on Redis"


def test_min_ready_seconds_outlasts_a_readiness_failure_window() -> None:
    manifests = build_manifests(make_spec())
    for name in ("emails-web", "emails-worker"):
        deployment = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == name)
        readiness = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        assert deployment["spec"]["minReadySeconds"] == _window(readiness) + readiness["periodSeconds"] == 15


# --- A kubelet over a real worker ------------------------------------------------------------------


@dataclass
class Probe:
    name: str
    spec: dict[str, Any]
    port: int
    failures: int = 0
    next_due: float = 0.0

    def check(self) -> bool:
        get = self.spec["httpGet"]
        url = f"http://127.0.0.1:{self.port}{get['path']}"
        try:
            with urllib.request.urlopen(url, timeout=self.spec["timeoutSeconds"]) as response:
                return 200 <= response.status < 400
        except urllib.error.HTTPError as err:
            return 200 <= err.code < 400
        except OSError:
            return False


@dataclass
class Kubelet:
    """The kubelet's probe state machine for one container (Kubernetes probe semantics)."""

    container: dict[str, Any]
    port: int
    started_at: float | None = None
    ready: bool = False
    restarts: list[str] = field(default_factory=list)
    readiness_log: list[tuple[float, bool]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.probes = {
            name: Probe(name, self.container[name], self.port)
            for name in ("startupProbe", "readinessProbe", "livenessProbe")
        }

    def run(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Probe for `seconds`, or until `until()` holds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            now = time.monotonic()
            active = ["startupProbe"] if self.started_at is None else ["readinessProbe", "livenessProbe"]
            for name in active:
                probe = self.probes[name]
                if now >= probe.next_due:
                    probe.next_due = now + probe.spec["periodSeconds"]
                    self._record(probe, probe.check(), now)
            time.sleep(0.1)

    def _record(self, probe: Probe, ok: bool, now: float) -> None:
        probe.failures = 0 if ok else probe.failures + 1
        if probe.name == "startupProbe" and ok:
            self.started_at = now - self.t0
        elif probe.name == "readinessProbe" and self._readiness_flips(probe, ok):
            self.ready = ok
            self.readiness_log.append((now - self.t0, ok))
        if probe.name != "readinessProbe" and probe.failures >= probe.spec["failureThreshold"]:
            self.restarts.append(f"{probe.name} at {now - self.t0:.0f}s")

    def _readiness_flips(self, probe: Probe, ok: bool) -> bool:
        """One success makes a pod ready (successThreshold 1); failureThreshold failures unready."""
        return ok != self.ready and (ok or probe.failures >= probe.spec["failureThreshold"])


def test_a_redis_outage_at_start_or_later_never_restarts_the_worker(tmp_path: Path) -> None:
    require("redis-server")
    spec = make_spec(worker={"max_job_seconds": 20, "liveness_stall_seconds": 30, "concurrency_per_queue": 1})
    built = container(build_manifests(spec), "Deployment", "emails-worker")
    port = free_port()
    redis = RedisServer(tmp_path / "redis")
    url_file = tmp_path / "redis-url"
    url_file.write_text(redis.url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(INHERIT_NOT)},
        **env_of(built),
        contract.ENV_REDIS_URL_FILE: str(url_file),
        contract.ENV_HEALTH_PORT: str(port),
    }
    kubelet_view = {
        name: {**built[name], "httpGet": {**built[name]["httpGet"], "port": port}}
        for name in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    log = (tmp_path / "worker.log").open("wb")
    [command] = built["args"]
    worker = subprocess.Popen([str(WORKER_BIN.with_name(command))], env=env, stdout=log, stderr=log, cwd=tmp_path)
    kubelet = Kubelet(kubelet_view, port)
    try:
        kubelet.run(10, until=lambda: kubelet.started_at is not None)  # Redis is down from the start
        assert kubelet.started_at is not None, "the startup probe must not wait for Redis"
        print(f"started (startup probe passed) {kubelet.started_at:.1f} s after launch, Redis down")
        kubelet.run(5)
        assert not kubelet.ready

        redis.start()
        kubelet.run(30, until=lambda: kubelet.ready)
        assert kubelet.ready, "ready once Redis answers"
        enqueue_many(redis.url, [("sleep", {"seconds": 5}, {}) for _ in range(20)], queue="emails")
        kubelet.run(3)  # the worker samples a backlog it cannot finish before the outage

        redis.stop(kill=True)
        outage = _window(built["livenessProbe"]) + built["livenessProbe"]["periodSeconds"]
        kubelet.run(outage)
        assert not kubelet.ready
        redis.start()
        kubelet.run(30, until=lambda: kubelet.ready)
        assert kubelet.ready, "ready again after the outage"
        assert worker.poll() is None, f"the worker exited ({worker.returncode}): the platform would restart it"
        assert kubelet.restarts == [], kubelet.restarts
        assert [ready for _, ready in kubelet.readiness_log] == [True, False, True], kubelet.readiness_log
    finally:
        worker.kill()
        worker.wait(timeout=10)
        redis.stop(kill=True)
        log.close()


@pytest.mark.parametrize("cpu", [10, 100, 250, 1000, 64_000])
def test_every_window_is_a_whole_number_of_periods(cpu: int) -> None:
    probe_set = probes.probe_set(8080, cpu, 45)
    built = probe_set.manifest()
    assert _window(built["startupProbe"]) >= probe_set.startup_window_seconds
    assert _window(built["livenessProbe"]) >= probe_set.liveness_window_seconds >= 45
