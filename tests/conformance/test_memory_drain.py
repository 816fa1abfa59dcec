"""Issue 11.2: drain before the OOM kill, against the kernel's real OOM killer.

A real reference worker runs in a real cgroup v1 memory cgroup with a limit (a container's), against a
real redis-server, on a memory-hungry job mix (tests/worker/memory_hungry_handlers.py): jobs that hold
tens of MiB for a while, several at once, and leak a few MiB each, the way a long-lived worker's memory
creeps up (a cache that never shrinks, fragmentation). A small supervisor restarts the worker whenever
it exits, as Kubernetes, ECS or systemd would. The same seeded mix runs twice:

- drain off (KILLSAFE_MEMORY_DRAIN_PERCENT=100): memory climbs until the kernel OOM-kills the worker
  (on v1 the biggest process: the worker itself, which holds the jobs) with every job in flight;
- drain on (the default threshold derived from the limit): the worker stops claiming above it, lets its
  jobs finish and exits 4; the supervisor starts a fresh one.

A job is "OOM-killed mid-job" when its execution started in a process that then died of SIGKILL while
the cgroup's oom_kill counter rose, and did not finish in that process. Every job must still complete,
with its side effect applied exactly once (SET NX markers), in both runs.

Each job (hold + leak, at most 34 MiB) fits in the room the default threshold leaves (40 MiB): the
drain wins when memory creeps, and cannot when jobs alone overcommit the limit (README: Memory and
concurrency).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from killsafe_worker import contract
from tests import cgroups
from tests.cgroups import oom_kills, remove_memory_cgroup, require_memory_v1
from tests.conformance.conftest import terminal
from tests.conftest import REPO, RedisServer, free_port, running
from tests.worker.conftest import INHERIT_NOT, client, enqueue_many, job_state, side_effects
from tests.worker.memory_hungry_handlers import FINISHED_KEY, STARTED_KEY

LIMIT_MIB = 256
JOBS = 120
CONCURRENCY = 3
SEED = 1102
WORKER_BIN = Path(sys.executable).with_name("killsafe-worker")
RUN_TIMEOUT_SECONDS = 240


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running(RedisServer(tmp_path / "redis"))


def _memory_cgroup(name: str) -> Path:
    """A memory cgroup of our own (v1), limited like a container, without swap."""
    require_memory_v1("creates a memory cgroup")
    return cgroups.create_memory_cgroup(f"memdrain-{name}", LIMIT_MIB * 2**20, swappiness_zero=True)


def job_mix(seed: int) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """The same jobs for both runs: hold 10-30 MiB for 0.5-1.5 s, leak 2-4 MiB."""
    rng = random.Random(seed)
    return [
        (
            "hungry",
            {"hold_mib": rng.choice((10, 20, 30)), "leak_mib": rng.choice((2, 3, 4)), "seconds": rng.uniform(0.5, 1.5)},
            {"jobId": f"hungry-{index}"},
        )
        for index in range(JOBS)
    ]


@dataclass
class Run:
    """One pass of the mix under the supervisor: every worker process and how it ended."""

    exits: list[tuple[int, int, int]] = field(default_factory=list)
    """(pid, exit status, OOM kills the cgroup counted while it ran)."""
    oom_killed_mid_job: int = 0
    handed_back: int = 0
    seconds: float = 0.0

    @property
    def oom_kills(self) -> int:
        return sum(kills for _, _, kills in self.exits)

    def count(self, status: int) -> int:
        return sum(1 for _, code, _ in self.exits if code == status)


def _start_worker(redis_url: str, group: Path, log_path: Path, drain_percent: str | None) -> subprocess.Popen[bytes]:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(INHERIT_NOT)},
        contract.ENV_REDIS_URL: redis_url,
        contract.ENV_QUEUES: "jobs",
        contract.ENV_CONCURRENCY_PER_QUEUE: str(CONCURRENCY),
        contract.ENV_HEALTH_PORT: str(free_port()),
        contract.ENV_LOCK_DURATION_MS: "2000",
        contract.ENV_STALLED_INTERVAL_MS: "1000",
        contract.ENV_MAX_STALLED_COUNT: "50",
        contract.ENV_MAX_JOB_SECONDS: "10",
        contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "15",
        contract.ENV_HANDLERS: "tests.worker.memory_hungry_handlers:HANDLERS",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    if drain_percent is not None:
        environment[contract.ENV_MEMORY_DRAIN_PERCENT] = drain_percent
    # The shell joins the cgroup, then becomes the worker (same pid): every byte it uses is charged.
    command = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group / "cgroup.procs"), str(WORKER_BIN)]
    with log_path.open("ab") as log_file:
        return subprocess.Popen(command, env=environment, stdout=log_file, stderr=log_file)


def run_mix(redis_server: RedisServer, tmp_path: Path, name: str, drain_percent: str | None) -> Run:
    """Enqueue the mix, supervise workers until every job completed, then tally the casualties."""
    r = client(redis_server.url)
    r.flushall()
    jobs = job_mix(SEED)
    ids = enqueue_many(redis_server.url, jobs, "jobs")
    group = _memory_cgroup(name)
    run = Run()
    started_at = time.monotonic()
    try:
        log_path = tmp_path / f"worker-{name}.log"
        deadline = started_at + RUN_TIMEOUT_SECONDS
        while True:
            kills_before = oom_kills(group)
            worker = _start_worker(redis_server.url, group, log_path, drain_percent)
            while worker.poll() is None:
                if all(job_state(r, job_id, "jobs") == "completed" for job_id in ids):
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(timeout=30)
                    break
                assert time.monotonic() < deadline, f"{name}: jobs unfinished after {RUN_TIMEOUT_SECONDS}s"
                time.sleep(0.2)
            run.exits.append((worker.pid, worker.returncode, oom_kills(group) - kills_before))
            if all(job_state(r, job_id, "jobs") == "completed" for job_id in ids):
                break
            assert worker.returncode in (-signal.SIGKILL, contract.EXIT_MEMORY_PRESSURE), (
                f"{name}: worker exited {worker.returncode}:\n{log_path.read_text()[-3000:]}"
            )
    finally:
        remove_memory_cgroup(group)
    run.seconds = time.monotonic() - started_at

    finished = set(r.lrange(FINISHED_KEY, 0, -1))
    killed = {pid for pid, status, kills in run.exits if status == -signal.SIGKILL and kills}
    for execution in r.lrange(STARTED_KEY, 0, -1):
        if execution in finished:
            continue
        if int(execution.split()[1]) in killed:
            run.oom_killed_mid_job += 1
        else:
            run.handed_back += 1

    assert all(job_state(r, job_id, "jobs") == "completed" for job_id in ids)
    effects = side_effects(r)
    assert len(effects) == JOBS and len({effect["jobId"] for effect in effects}) == JOBS, (
        f"{name}: {len(effects)} side effects for {JOBS} jobs: each exactly once"
    )
    return run


def test_draining_before_the_oom_kill_saves_the_jobs_in_flight(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> None:
    say = terminal(request)
    without = run_mix(redis_server, tmp_path, "off", str(contract.MEMORY_DRAIN_OFF))
    with_drain = run_mix(redis_server, tmp_path, "on", None)
    threshold = contract.default_memory_drain_percent(LIMIT_MIB)
    for label, run in (("without drain", without), (f"with drain ({threshold} %)", with_drain)):
        say(
            f"[memory drain] {label}: {JOBS} jobs, limit {LIMIT_MIB} MiB, concurrency {CONCURRENCY}, seed {SEED}: "
            f"worker processes {len(run.exits)}, OOM kills {run.oom_kills}, "
            f"memory-pressure exits {run.count(contract.EXIT_MEMORY_PRESSURE)}, "
            f"OOM-killed mid-job {run.oom_killed_mid_job}, handed back {run.handed_back}, {run.seconds:.0f} s"
        )
    saved = f"without drain {without.oom_killed_mid_job}, with drain {with_drain.oom_killed_mid_job}"
    say(f"[memory drain] OOM-killed mid-job: {saved}")
    assert without.oom_kills >= 1 and without.oom_killed_mid_job >= 1, "the mix must provoke the OOM killer"
    assert with_drain.count(contract.EXIT_MEMORY_PRESSURE) >= 1, "the drain must have acted"
    assert with_drain.oom_kills == 0 and with_drain.oom_killed_mid_job == 0
    assert with_drain.handed_back == 0, "each job fits the room below the limit: in-flight jobs finish"
