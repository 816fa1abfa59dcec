"""The rendered units under a real systemd (PID 1 of a systemd-nspawn machine) with the real
reference worker, the real local Redis unit and the rendered install script; one boot, many cases.

Each case prints what it measured. Timings come from a loaded 2-core machine: bounds are generous,
and what is asserted is behaviour (states, results, restarts, jobs), not speed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
import yaml

from tests.conftest import REPO, free_port, require, require_root
from tests.systemd.machine import Machine
from tests.worker.conftest import client, enqueue, enqueue_many, job_state, wait_for

NAME = "ksci"
VENV = f"/opt/{NAME}/venv"
RENDERED = f"/srv/{NAME}"
PAYLOAD = "/opt/ksci-tests"
QUEUE = "jobs"
MAX_JOB_SECONDS = 4
DRAIN_MARGIN_SECONDS = 5
STOP_TIMEOUT = MAX_JOB_SECONDS + DRAIN_MARGIN_SECONDS
WATCHDOG_SECONDS = 5
MEMORY_MIB = 128
ODD_VALUE = "x%i $HOME ${HOME} \"q\" 's' \\back `cmd`"
"""Reaches the processes byte for byte: no specifier, variable or quote of systemd's applies."""
CASE_HANDLERS = {"KILLSAFE_HANDLERS": "ksci_handlers:HANDLERS", "PYTHONPATH": PAYLOAD}
DASHBOARD_USERS = f"/etc/{NAME}/dashboard-users"
DASHBOARD_PASSWORD = "correct horse battery staple"


class Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Webhook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Suite:
    """The booted machine plus what the cases share (its Redis, free ports, the timing report)."""

    def __init__(self, machine: Machine, ports: dict[str, int], say: Callable[[str], None]) -> None:
        self.machine = machine
        self.ports = ports
        self.say = say
        self.redis_url = machine.run("cat", f"/etc/{NAME}/credentials/redis-url").stdout.strip()
        self.redis: redis.Redis = client(self.redis_url)

    def instance(self, port: int, env: dict[str, str] | None = None) -> str:
        """A worker instance of the rendered template; `env` overrides the rendered environment file
        (a drop-in adds an EnvironmentFile, which wins over the earlier ones)."""
        unit = f"{NAME}-worker@{port}.service"
        if env:
            env_file = f"/run/{NAME}-{port}.env"
            self.machine.write(env_file, "".join(f"{k}={v}\n" for k, v in env.items()))
            self.machine.write(f"/run/systemd/system/{unit}.d/case.conf", f"[Service]\nEnvironmentFile={env_file}\n")
            self.machine.run("systemctl", "daemon-reload")
        return unit

    def case(self, title: str, seconds: float, detail: str = "") -> None:
        self.say(f"  systemd case: {title:<58} {seconds:6.2f} s  {detail}")


@pytest.fixture(scope="module")
def suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    require_root("systemd-nspawn needs root")
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "unshare"):
        require(tool, "the systemd behaviour suite")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        """Straight to the terminal, also under capture: the measured times are the suite's output."""
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    tmp = tmp_path_factory.mktemp("systemd-suite")
    started = time.monotonic()
    built = subprocess.run(
        ["bash", str(REPO / "tests/systemd/rootfs.sh"), VENV], capture_output=True, text=True, timeout=1500
    )
    assert built.returncode == 0, built.stderr[-4000:]
    paths = dict(item.split("=", 1) for item in built.stdout.strip().splitlines()[-1].split())
    say(f"  systemd suite: rootfs + venv ready in {time.monotonic() - started:.1f} s ({paths['ROOTFS']})")

    ports = {
        "redis": free_port(),
        "web": free_port(),
        "health": free_port(),
        "webhook": free_port(),
        "dashboard": free_port(),
    }
    stack = {
        "config": {
            "killsafe:target": "systemd",
            "killsafe:workload": {
                "name": NAME,
                "image": "localhost/ksci:test",
                "env": {"KSCI_ODD": ODD_VALUE},
                "redis": {"mode": "local", "memory_mib": 128},
                "web": {"port": ports["web"], "replicas": 1, "memory_mib": 128, "max_request_seconds": 5},
                "worker": {
                    "queues": [QUEUE],
                    "concurrency_per_queue": 2,
                    "replicas": 2,
                    "max_job_seconds": MAX_JOB_SECONDS,
                    "drain_margin_seconds": DRAIN_MARGIN_SECONDS,
                    "memory_mib": MEMORY_MIB,
                    "health_port": ports["health"],
                    "liveness_stall_seconds": 30,
                    "lock_duration_seconds": 5,
                    "stalled_interval_seconds": 2,
                },
                "dashboard": {
                    "enabled": True,
                    "port": ports["dashboard"],
                    "auth": {"mode": "basic", "credentials_secret": {"name": DASHBOARD_USERS}},
                },
                "systemd": {
                    "watchdog_seconds": WATCHDOG_SECONDS,
                    "redis_port": ports["redis"],
                    "alert_webhook_file": f"/etc/{NAME}/alert-webhook",
                },
            },
        }
    }
    stacks = tmp / "stacks"
    stacks.mkdir()
    (stacks / f"Pulumi.{NAME}.yaml").write_text(yaml.safe_dump(stack))
    rendered = subprocess.run(
        [
            str(REPO / ".venv/bin/killsafe"),
            "render",
            "--stacks-dir",
            str(stacks),
            "--stack",
            NAME,
            "--out",
            str(tmp / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert rendered.returncode == 0, rendered.stderr

    server = ThreadingHTTPServer(("127.0.0.1", ports["webhook"]), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    machine = Machine(
        Path(paths["ROOTFS"]),
        {VENV: Path(paths["VENV"]), RENDERED: tmp / "out" / "systemd", PAYLOAD: REPO / "tests/systemd/payload"},
        tmp / "nspawn.log",
    )
    try:
        boot = machine.boot()
        say(f"  systemd suite: machine {machine.name} booted in {boot:.2f} s")
        machine.write(f"/etc/{NAME}/alert-webhook", f"http://127.0.0.1:{ports['webhook']}/hook\n", mode="0600")
        users = subprocess.run(
            [str(REPO / ".venv/bin/killsafe-dashboard"), "hash-password", "--user", "alice", "--role", "viewer"],
            input=DASHBOARD_PASSWORD + "\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        machine.write(DASHBOARD_USERS, users, mode="0600")
        t = time.monotonic()
        installed = machine.run(f"{RENDERED}/install.sh", check=False, timeout=300)
        assert installed.returncode == 0, f"{installed.stdout}\n{installed.stderr}"
        say(f"  systemd suite: install.sh (first start) took {time.monotonic() - t:.2f} s")
        yield Suite(machine, ports, say)
    finally:
        t = time.monotonic()
        machine.shutdown()
        server.shutdown()
        down = time.monotonic() - t
        say(f"  systemd suite: machine down, cgroups removed in {down:.2f} s; total {time.monotonic() - started:.1f} s")
        shutil.rmtree(tmp / "out", ignore_errors=True)


def wait_active(s: Suite, unit: str, timeout: float = 60) -> float:
    return s.machine.wait_prop(unit, "ActiveState", "active", timeout)


def test_install_script_starts_everything_and_local_redis_is_for_queues(suite: Suite):
    s, m = suite, suite.machine
    units = [
        f"{NAME}-redis.service",
        f"{NAME}-web.service",
        f"{NAME}-workers.target",
        *(f"{NAME}-worker@{suite.ports['health'] + i}.service" for i in range(2)),
    ]
    states = m.run("systemctl", "is-active", *units, check=False).stdout.split()
    assert states == ["active"] * len(units), dict(zip(units, states, strict=False))
    assert m.prop(f"{NAME}-worker@{s.ports['health'] + 2}.service", "ActiveState") == "inactive"  # surge gone
    t = time.monotonic()
    assert s.redis.config_get("appendonly")["appendonly"] == "yes"
    assert s.redis.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert s.redis.config_get("appendfsync")["appendfsync"] == "everysec"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=s.ports["redis"]).ping()
    redis_pid = m.prop(f"{NAME}-redis.service", "MainPID")
    password = s.redis_url.split(":")[2].split("@")[0]
    assert password not in m.run("cat", f"/proc/{redis_pid}/cmdline").stdout
    unit = f"{NAME}-worker@{s.ports['health']}.service"
    env = m.prop(unit, "Environment")
    assert f"REDIS_URL_FILE=/run/credentials/{unit}/redis-url" in env, env
    assert password not in env and password not in m.run("cat", f"/etc/{NAME}/worker.env").stdout
    environ = m.run("cat", f"/proc/{m.prop(unit, 'MainPID')}/environ").stdout.split("\0")
    assert f"KSCI_ODD={ODD_VALUE}" in environ, [e for e in environ if e.startswith("KSCI_ODD")]
    job = enqueue(s.redis_url, "echo", {"via": "credential"})
    wait_for(lambda: job_state(s.redis, job) == "completed", 30, "a job through the credential URL")
    s.case(
        "local Redis: AOF, noeviction, auth; worker reads the credential",
        time.monotonic() - t,
        f"(redis user {m.prop(f'{NAME}-redis.service', 'User') or 'dynamic'})",
    )


def test_start_returns_only_after_ready(suite: Suite):
    s, m = suite, suite.machine
    port = free_port()
    unit = s.instance(port)
    t = time.monotonic()
    m.run("systemctl", "start", unit)
    took = time.monotonic() - t
    # The moment start returned, the worker already answers ready and said so (STATUS from sd_notify).
    status = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/readyz"],
        capture_output=True,
        text=True,
    ).stdout
    assert status == "200", status
    assert m.prop(unit, "StatusText").startswith("consuming"), m.prop(unit, "StatusText")
    assert m.prop(unit, "SubState") == "running"
    exec_to_ready = (
        int(m.prop(unit, "ActiveEnterTimestampMonotonic")) - int(m.prop(unit, "ExecMainStartTimestampMonotonic"))
    ) / 1e6
    assert exec_to_ready > 0
    m.run("systemctl", "stop", unit)
    s.case("start returns only after READY=1 (readyz 200 at return)", took, f"(exec -> READY=1 {exec_to_ready:.2f} s)")


def test_stop_drains_an_in_flight_job_and_exits_0(suite: Suite):
    s, m = suite, suite.machine
    port = free_port()
    unit = s.instance(port, {"KILLSAFE_QUEUES": "drain"})
    m.run("systemctl", "start", unit)
    job = enqueue(s.redis_url, "sleep", {"seconds": 3}, queue="drain")
    wait_for(lambda: job_state(s.redis, job, "drain") == "active", 20, "the job to start")
    t = time.monotonic()
    m.run("systemctl", "stop", unit)
    took = time.monotonic() - t
    assert job_state(s.redis, job, "drain") == "completed"
    assert m.prop(unit, "Result") == "success"
    assert m.prop(unit, "ExecMainStatus") == "0"
    assert "drained: stopped cleanly" in m.journal(unit)
    assert took < STOP_TIMEOUT, f"stop took {took:.1f}s: the worker was killed, not drained"
    s.case("systemctl stop drains the in-flight 3 s job, exit 0", took, "(Result=success)")


def test_a_worker_ignoring_sigterm_is_killed_after_timeout_stop_sec(suite: Suite):
    s, m = suite, suite.machine
    port = free_port()
    unit = s.instance(port, {**CASE_HANDLERS, "KILLSAFE_QUEUES": "deaf"})
    m.run("systemctl", "start", unit)
    job = enqueue(s.redis_url, "block", {"seconds": 120}, queue="deaf")  # blocking code: SIGTERM never handled
    wait_for(lambda: job_state(s.redis, job, "deaf") == "active", 20, "the blocking job to start")
    t = time.monotonic()
    m.run("systemctl", "stop", unit)
    took = time.monotonic() - t
    assert m.prop(unit, "Result") == "timeout", m.journal(unit)[-2000:]
    assert STOP_TIMEOUT - 0.5 <= took <= STOP_TIMEOUT + 15, took
    assert "State 'stop-sigterm' timed out. Killing." in m.journal(unit)
    s.case(f"SIGTERM ignored: SIGKILL after TimeoutStopSec={STOP_TIMEOUT}", took, "(Result=timeout)")


def test_kill_9_is_restarted(suite: Suite):
    s, m = suite, suite.machine
    unit = s.instance(free_port())
    m.run("systemctl", "start", unit)
    before = m.prop(unit, "MainPID")
    t = time.monotonic()
    m.run("kill", "-9", before)
    m.wait_prop(unit, "NRestarts", "1", 30)
    wait_active(s, unit)
    took = time.monotonic() - t
    assert m.prop(unit, "MainPID") not in (before, "0")
    m.run("systemctl", "stop", unit)
    s.case("kill -9: restarted and READY again", took, "(RestartSec=2)")


def test_watchdog_restarts_a_worker_whose_event_loop_is_blocked(suite: Suite):
    s, m = suite, suite.machine
    unit = s.instance(free_port(), {**CASE_HANDLERS, "KILLSAFE_QUEUES": "blocked"})
    m.run("systemctl", "start", unit)
    enqueue(s.redis_url, "block", {"seconds": 600}, queue="blocked")
    t = time.monotonic()
    m.wait_prop(unit, "NRestarts", "1", 60)
    took = time.monotonic() - t
    journal = m.journal(unit)
    assert "Watchdog timeout" in journal, journal[-3000:]
    assert "block_the_loop" in journal, "the fault handler's stack (where the loop blocked) is in the journal"
    m.run("systemctl", "stop", unit)
    s.case(
        f"event loop blocked: watchdog ({WATCHDOG_SECONDS} s) SIGABRT + restart",
        took,
        "(stack of the blocking handler in the journal)",
    )


def test_watchdog_restarts_a_frozen_worker_while_jobs_wait(suite: Suite):
    s, m = suite, suite.machine
    unit = s.instance(free_port(), {"KILLSAFE_QUEUES": "frozen"})
    m.run("systemctl", "start", unit)
    pid = m.prop(unit, "MainPID")
    m.run("kill", "-STOP", pid)
    jobs = enqueue_many(s.redis_url, [("echo", {"n": i}, {}) for i in range(3)], "frozen")
    t = time.monotonic()
    m.wait_prop(unit, "NRestarts", "1", 60)
    wait_active(s, unit)
    took = time.monotonic() - t
    wait_for(lambda: all(job_state(s.redis, j, "frozen") == "completed" for j in jobs), 30, "the waiting jobs")
    assert "Watchdog timeout" in m.journal(unit)
    m.run("systemctl", "stop", unit)
    s.case(
        "frozen (SIGSTOP) while jobs wait: watchdog, SIGABRT, restart",
        took,
        "(systemd sends SIGCONT with the signal; the waiting jobs then done)",
    )


def test_memory_max_kills_an_over_allocating_worker_and_it_restarts(suite: Suite):
    s, m = suite, suite.machine
    unit = s.instance(free_port(), {**CASE_HANDLERS, "KILLSAFE_QUEUES": "hog"})
    m.run("systemctl", "start", unit)
    enqueue(s.redis_url, "alloc", {}, queue="hog", attempts=1)
    t = time.monotonic()
    m.wait_prop(unit, "NRestarts", "1", 60)
    took = time.monotonic() - t
    journal = m.journal(unit)
    killed = "oom-kill" in journal or "status=9/KILL" in journal
    assert killed, journal[-3000:]
    how = "Result=oom-kill" if "oom-kill" in journal else "SIGKILL by the memory cgroup (v1: Result=signal)"
    wait_active(s, unit)
    m.run("systemctl", "stop", unit)
    s.case(f"MemoryMax={MEMORY_MIB}M: OOM-killed, restarted", took, f"({how})")


def test_a_crash_loop_ends_failed_and_the_alert_unit_posts_the_webhook(suite: Suite):
    s, m = suite, suite.machine
    port = free_port()
    unit = s.instance(port, {"KILLSAFE_CONCURRENCY": "2"})  # refused by the worker: exit 2 at every start
    Webhook.received.clear()
    t = time.monotonic()
    m.run("systemctl", "start", "--no-block", unit)
    m.wait_prop(unit, "ActiveState", "failed", 120)
    took = time.monotonic() - t
    assert m.prop(unit, "Result") in ("exit-code", "start-limit-hit")
    wait_for(lambda: Webhook.received, 30, "the alert webhook POST")
    alert = Webhook.received[0]
    assert alert["unit"] == unit and alert["workload"] == NAME and alert["result"] == "exit-code", alert
    assert f"ALERT {NAME}: {unit}" in m.journal(f"{NAME}-alert@{unit}.service")
    restarts = m.prop(unit, "NRestarts")
    m.run("systemctl", "reset-failed", unit)
    s.case(
        "crash loop: failed after the start limit, alert POSTed",
        took,
        f"(NRestarts={restarts}, webhook got {alert['result']} {alert['exit_code']} {alert['exit_status']})",
    )


def test_stopping_the_workers_target_stops_every_instance_and_loses_no_job(suite: Suite):
    s, m = suite, suite.machine
    instances = [f"{NAME}-worker@{s.ports['health'] + i}.service" for i in range(2)]
    side_effects_before = s.redis.llen("killsafe:side-effects")
    jobs = enqueue_many(s.redis_url, [("sleep", {"seconds": 1.5}, {}) for _ in range(12)], QUEUE)
    wait_for(lambda: s.redis.llen(f"bull:{QUEUE}:active") >= 3, 20, "jobs running on both instances")
    t = time.monotonic()
    m.run("systemctl", "stop", f"{NAME}-workers.target")
    # The target's stop job ends first (it is ordered after its instances); each instance then drains.
    for instance in instances:
        m.wait_prop(instance, "ActiveState", "inactive", STOP_TIMEOUT + 15)
        assert m.prop(instance, "Result") == "success", m.journal(instance)[-2000:]
    took = time.monotonic() - t
    states = [job_state(s.redis, j) for j in jobs]
    assert "active" not in states and "failed" not in states, states
    done_at_stop = states.count("completed")
    m.run("systemctl", "start", f"{NAME}-workers.target")
    wait_for(lambda: all(job_state(s.redis, j) == "completed" for j in jobs), 60, "every job after the restart")
    s.case(
        "stop workers target: all instances stop, no job lost",
        took,
        f"({done_at_stop}/12 done at stop, rest waiting; all 12 done after start)",
    )
    assert side_effects_before is not None


def test_web_enqueues_and_a_rollout_never_drops_worker_capacity(suite: Suite):
    """install.sh again = a rollout: surge instance, one restart at a time; sampled registrations never
    fall below worker.replicas."""
    s, m = suite, suite.machine
    answer = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"name": "echo", "data": {"from": "web"}}',
            f"http://127.0.0.1:{s.ports['web']}/jobs",
        ],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    assert answer[-1] == "202", answer
    web_job = json.loads(answer[0])["id"]
    wait_for(lambda: job_state(s.redis, web_job) == "completed", 30, "the job the web enqueued")

    def registered() -> int:
        records = [s.redis.get(key) for key in s.redis.scan_iter("killsafe:workers:*")]
        return sum(1 for r in records if r and QUEUE in json.loads(r)["queues"])

    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(registered())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.monotonic()
    try:
        rolled = m.run(f"{RENDERED}/install.sh", check=False, timeout=300)
    finally:
        done.set()
        sampler.join()
    took = time.monotonic() - t
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert min(samples) >= 2, f"capacity dropped to {min(samples)} registered workers during the rollout"
    assert m.prop(f"{NAME}-worker@{s.ports['health'] + 2}.service", "ActiveState") == "inactive"
    s.case(
        "install.sh rollout: surge + one restart at a time",
        took,
        f"(registered workers min {min(samples)}, max {max(samples)} over {len(samples)} samples)",
    )


def http_status(url: str, *curl: str) -> str:
    """The HTTP status code, or 000 when nothing answers (connection refused)."""
    return subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}", *curl, url], capture_output=True, text=True
    ).stdout


def test_the_dashboard_unit_serves_behind_auth_on_loopback_only(suite: Suite):
    """Type=notify: the moment `systemctl restart` returns it answers, on 127.0.0.1 only: 401 without
    credentials, 200 with the user from the LoadCredential= file, nothing on the web port or the host's
    other addresses."""
    s, m = suite, suite.machine
    unit, port = f"{NAME}-dashboard.service", s.ports["dashboard"]
    t = time.monotonic()
    m.run("systemctl", "restart", unit)
    took = time.monotonic() - t
    local = f"http://127.0.0.1:{port}/"
    assert http_status(local) == "401"
    assert m.prop(unit, "StatusText").startswith("listening on port"), m.prop(unit, "StatusText")
    assert http_status(local, "-u", f"alice:{DASHBOARD_PASSWORD}") == "200"
    assert http_status(local, "-u", "alice:wrong-password-123") == "401"
    assert m.prop(NAME + ".target", "Wants").count(unit) == 1
    assert DASHBOARD_PASSWORD not in m.prop(unit, "Environment") and "argon2" not in m.prop(unit, "Environment")
    assert f"KILLSAFE_DASHBOARD_CREDENTIALS_FILE=/run/credentials/{unit}/dashboard-users" in m.prop(unit, "Environment")
    web = f"http://127.0.0.1:{s.ports['web']}"
    for path in ("/", "/audit", f"/queues/{QUEUE}/failed"):
        page = subprocess.run(["curl", "-s", "-m", "5", web + path], capture_output=True, text=True).stdout
        assert "killsafe dashboard" not in page.lower() and http_status(web + path) != "401", (path, page[:200])
    others = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    refused = [a for a in others if http_status(f"http://{'[' + a + ']' if ':' in a else a}:{port}/") == "000"]
    assert refused == others, f"the dashboard answers on {sorted(set(others) - set(refused))}"
    s.case(
        "dashboard: 401 without auth, on 127.0.0.1 only, not on the web port",
        took,
        f"(restart returned after READY=1; refused on {', '.join(others) or 'no other address'})",
    )
