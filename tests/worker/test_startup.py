"""Items 7 and 9: start-up never depends on Redis and never drops a stop signal.

A worker started while Redis is down is alive (/livez 200) and not ready (/readyz 503) for as long
as Redis stays down, far past every startup timeout, and is ready within a second or two of Redis
starting. As PID 1 (no init in the container) a SIGTERM that arrives while the worker is still
importing is honoured: the handlers are installed before anything slow is loaded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from killsafe_worker import contract
from tests.conftest import RedisServer, free_port, require, require_root
from tests.worker.conftest import (
    INHERIT_NOT,
    STARTUP_TIMEOUT,
    WORKER_BIN,
    AuthRedisServer,
    WorkerFactory,
    capture_log_file,
    client,
    enqueue,
    job_state,
    wait_for,
)

STARTUP_BUDGET = 2.0
"""KILLSAFE_STARTUP_TIMEOUT_SECONDS in these tests: the outage lasts three times as long."""


def test_redis_down_at_start_is_alive_and_not_ready_then_ready_within_seconds(
    tmp_path: Path, workers: WorkerFactory
) -> None:
    late = AuthRedisServer(tmp_path / "late-redis")  # not started yet
    worker = workers.start(
        env={contract.ENV_REDIS_URL: late.url, contract.ENV_STARTUP_TIMEOUT_SECONDS: str(STARTUP_BUDGET)},
        wait_ready=False,
    )
    worker.wait_status(contract.LIVE_PATH, 200, timeout=STARTUP_TIMEOUT)
    end = time.monotonic() + 3 * STARTUP_BUDGET
    while time.monotonic() < end:
        assert worker.proc.poll() is None, f"the worker exited while Redis was down:\n{worker.log_text()}"
        assert worker.status(contract.LIVE_PATH) == 200, worker.get(contract.LIVE_PATH)
        assert worker.status(contract.READY_PATH) == 503
        time.sleep(0.2)

    late.start()
    back = time.monotonic()
    try:
        worker.wait_ready(timeout=30)
        ready_after = time.monotonic() - back
        print(f"ready {ready_after:.2f} s after Redis started (it was down {3 * STARTUP_BUDGET:g} s)")
        assert ready_after < 2.0, f"ready only {ready_after:.2f} s after Redis started"
        job = enqueue(late.url, "echo", {"after": "outage"})
        wait_for(lambda: job_state(client(late.url), job) == "completed", 20, "a job once Redis is up")
        assert not [entry for entry in worker.logs() if entry["level"] == "CRITICAL"]
    finally:
        late.stop(kill=True)


def test_a_busy_health_port_is_retried_within_the_startup_budget(redis_server: RedisServer, workers: WorkerFactory):
    port = free_port()
    holder = socket.create_server(("0.0.0.0", port))
    worker = workers.start(env={contract.ENV_HEALTH_PORT: str(port)}, wait_ready=False)
    worker.port = port
    time.sleep(1.5)
    assert worker.proc.poll() is None
    holder.close()
    worker.wait_ready()

    blocked = free_port()
    holder = socket.create_server(("0.0.0.0", blocked))
    try:
        stuck = workers.start(
            env={contract.ENV_HEALTH_PORT: str(blocked), contract.ENV_STARTUP_TIMEOUT_SECONDS: "1"}, wait_ready=False
        )
        assert stuck.wait_exit(timeout=60) == contract.EXIT_FAILURE
        assert any(entry["msg"] == "cannot serve health checks" for entry in stuck.logs())
    finally:
        holder.close()


def _sigterm_caught(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _child_of(pid: int) -> int | None:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else None


def test_sigterm_while_still_importing_is_honoured_as_pid_1(redis_server: RedisServer, tmp_path: Path) -> None:
    """The kernel drops a signal to a PID 1 that has no handler for it, so the handler must come first."""
    require("unshare", "a PID namespace makes the worker PID 1")
    require_root("unshare --pid")
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(INHERIT_NOT)},
        contract.ENV_REDIS_URL: redis_server.url,
        contract.ENV_QUEUES: "jobs",
        contract.ENV_HEALTH_PORT: str(free_port()),
    }
    log_path = capture_log_file(tmp_path / "pid1.log")
    with log_path.open("wb") as log_file:
        outer = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", str(WORKER_BIN)], env=env, stdout=log_file, stderr=log_file
        )
    try:
        worker_pid = wait_for(lambda: _child_of(outer.pid), 10, "unshare to fork the worker", 0.001)
        wait_for(lambda: "killsafe-worker" in Path(f"/proc/{worker_pid}/cmdline").read_text(), 10, "exec", 0.001)
        wait_for(lambda: _sigterm_caught(worker_pid), 30, "a SIGTERM handler", 0.0005)
        os.kill(worker_pid, signal.SIGSTOP)  # freeze the moment the handler appeared
        loaded = Path(f"/proc/{worker_pid}/maps").read_text()
        os.kill(worker_pid, signal.SIGTERM)
        os.kill(worker_pid, signal.SIGCONT)
        assert "bullmq" not in loaded and "hiredis" not in loaded and "msgpack" not in loaded, (
            "the SIGTERM handler was installed only after the worker's heavy imports"
        )
        assert outer.wait(timeout=60) == contract.EXIT_OK
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait(timeout=10)
    log = log_path.read_text()
    assert "stop signal received" in log and '"ready"' not in log, log
