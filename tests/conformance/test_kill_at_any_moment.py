"""Kill at any moment: 2,000 jobs through 3 supervised workers while a seeded schedule SIGKILLs,
SIGTERMs, freezes, OOM-kills and redeploys them and restarts Redis; at the end nothing is lost and
every side effect happened exactly once. Real processes, real redis-server, real kernel OOM killer.

Re-run a schedule: KILLSAFE_CONFORMANCE_SEED=<seed> .venv/bin/pytest tests/conformance -q
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from killsafe_worker import contract
from tests import cgroups
from tests.cgroups import require_memory_v1
from tests.conformance import analysis, workload
from tests.conformance.conftest import terminal
from tests.conformance.handlers import LEDGER_ENV
from tests.conformance.schedule import OOM_SLOT, WORKER_SLOTS, ChaosEvent, chaos_schedule, counts, seed_from_env
from tests.conformance.supervisor import Supervisor
from tests.conftest import REPO, require
from tests.worker.conftest import AuthRedisServer, WorkerFactory, WorkerProcess, client, side_effects, wait_for

LOCK_DURATION_MS = 2000
STALLED_INTERVAL_MS = 1000
CONCURRENCY = 8
WORKER_ENV = {
    contract.ENV_LOCK_DURATION_MS: str(LOCK_DURATION_MS),
    contract.ENV_STALLED_INTERVAL_MS: str(STALLED_INTERVAL_MS),
    contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "2",  # below the slow jobs' 3 s: some SIGTERMs hand jobs back
    contract.ENV_MAX_JOB_SECONDS: "20",
    contract.ENV_MAX_STALLED_COUNT: "10",  # stalls are the chaos here, not a poison job
    contract.ENV_HANDLERS: "tests.conformance.handlers:HANDLERS",
    contract.ENV_STARTUP_TIMEOUT_SECONDS: "60",
    "PYTHONPATH": str(REPO),
}
OOM_LIMIT_BYTES = 128 * 1024 * 1024
SETTLE_TIMEOUT_SECONDS = 150.0
SENTINEL_NOTE = (
    "not run: redis-sentinel installs (apt, 7.0.15) but the reference worker takes one REDIS_URL and has no "
    "Sentinel discovery, so after a failover it would keep writing to the demoted master (READONLY errors) "
    "until restarted with the new address; and Sentinel's asynchronous replication loses acknowledged writes "
    "in a failover, so '0 lost' could not be claimed without WAIT in BullMQ's scripts"
)


@dataclass
class Run:
    """What happened during one run, for the report."""

    executed: list[dict[str, Any]] = field(default_factory=list)
    kills: list[tuple[str, int, float]] = field(default_factory=list)
    """(kind, pid, time.time()) of every SIGKILL, OOM kill and SIGSTOP."""
    oom_kills_seen_by_kernel: int = 0


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AuthRedisServer]:
    """appendfsync always: every acknowledged write is fsynced before the reply, so a SIGKILL of Redis
    (or of the machine) loses nothing a worker was told had happened. With everysec (production's usual
    choice) a Redis *process* crash also loses nothing acknowledged (the AOF write(2) precedes the reply,
    the page cache survives), but a machine crash loses up to a second, and a slow fsync can postpone
    writes past their replies: "0 lost" would then depend on the kernel, not on Redis."""
    server = AuthRedisServer(tmp_path / "redis", extra=("--appendfsync", "always"))
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    require_memory_v1("a cgroup v1 memory cgroup for the OOM kill")
    with cgroups.memory_cgroup("conformance", OOM_LIMIT_BYTES) as group:
        yield group


@pytest.mark.timeout(600)
def test_kill_at_any_moment(
    request: pytest.FixtureRequest, tmp_path: Path, aof_redis: AuthRedisServer, memory_cgroup: Path
) -> None:
    require("redis-cli")
    say = terminal(request)
    began = time.monotonic()
    seed = seed_from_env()
    plan = chaos_schedule(seed, lock_duration_ms=LOCK_DURATION_MS)
    say(f"\n[conformance] seed {seed} (re-run: KILLSAFE_CONFORMANCE_SEED={seed}); planned {dict(counts(plan))}")

    ledger = tmp_path / "ledger"
    ledger.mkdir()
    factory = WorkerFactory(aof_redis, tmp_path)
    starting = threading.Lock()

    def starter(index: int) -> Callable[[], WorkerProcess]:
        queues = f"{workload.QUEUE},{workload.HOG_QUEUE}" if index == OOM_SLOT else workload.QUEUE

        def start() -> WorkerProcess:
            with starting:
                return factory.start(
                    queues=queues,
                    concurrency=CONCURRENCY,
                    env={**WORKER_ENV, LEDGER_ENV: str(ledger)},
                    wait_ready=False,
                )

        return start

    supervisor = Supervisor([starter(index) for index in range(WORKER_SLOTS)])
    run = Run()
    try:
        supervisor.start()
        for index in range(WORKER_SLOTS):
            supervisor.current(index, timeout=90)
        jobs = workload.plan_jobs(seed)
        hog = workload.hog_job()
        asyncio.run(workload.add_batch(aof_redis.url, jobs[:1000]))
        producer_errors: list[BaseException] = []
        producer = threading.Thread(target=produce, args=(aof_redis.url, jobs[1000:], producer_errors), daemon=True)
        chaos_began = time.monotonic()
        producer.start()
        for event in plan:
            delay = chaos_began + event.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            run.executed.append(execute(event, supervisor, aof_redis, memory_cgroup, hog, run))
        producer.join(timeout=120)
        assert not producer_errors, producer_errors
        chaos_seconds = time.monotonic() - chaos_began

        r = client(aof_redis.url)
        total = len(jobs) + 1
        settle_began = time.monotonic()
        wait_for(
            lambda: settled(r) >= total,
            SETTLE_TIMEOUT_SECONDS,
            "every job to complete or fail for good",
            0.5,
        )
        settle_seconds = time.monotonic() - settle_began
    finally:
        supervisor.stop()
        factory.cleanup()

    # --- the verdict ------------------------------------------------------------------------------
    planned = {job.job_id: job for job in [*jobs, hog]}
    completed = set(r.zrange("bull:jobs:completed", 0, -1)) | set(r.zrange("bull:hog:completed", 0, -1))
    failed = set(r.zrange("bull:jobs:failed", 0, -1)) | set(r.zrange("bull:hog:failed", 0, -1))
    effects = Counter(effect["jobId"] for effect in side_effects(r))
    missing = [job for job in planned if job not in completed | failed]
    no_effect = [job for job in completed if effects[job] == 0]
    lost = missing + no_effect
    duplicate_effects = {job: n for job, n in effects.items() if n > 1}
    failed_reasons = {job: r.hget(f"bull:{queue_of(job)}:{job}", "failedReason") or "" for job in failed}
    unexpected_failures = {job: failed_reasons[job] for job in failed if planned[job].expected != "failed"}
    not_failed = [job for job, spec in planned.items() if spec.expected == "failed" and job not in failed]
    stuck = {
        f"{queue}:{state}": n
        for queue in (workload.QUEUE, workload.HOG_QUEUE)
        for state, n in (
            ("active", r.llen(f"bull:{queue}:active")),
            ("wait", r.llen(f"bull:{queue}:wait")),
            ("delayed", r.zcard(f"bull:{queue}:delayed")),
            ("prioritized", r.zcard(f"bull:{queue}:prioritized")),
        )
        if n
    }
    executions = analysis.read_ledger(ledger)
    hurt = analysis.casualties(executions, run.kills)
    recovery = hurt.recovery_seconds
    metric_interrupted = supervisor.interrupted_by_reason()
    from_logs = analysis.interrupted_from_logs(
        [worker.log_path for worker in factory.started], contract.INTERRUPT_REASONS
    )
    exits = Counter(f"{e.cause}:{e.code}" for e in supervisor.exits)
    report = {
        "seed": seed,
        "jobs": len(planned),
        "mix": dict(workload.mix([*jobs, hog])),
        "completed": len(completed),
        "failed_for_good": len(failed),
        "lost": len(lost),
        "duplicate_side_effects": sum(n - 1 for n in duplicate_effects.values()),
        "duplicate_executions": analysis.duplicate_executions(executions),
        "executions": len(executions),
        "interrupted_by_reason_metric": {reason: n for reason, n in metric_interrupted.items() if n},
        "interrupted_by_reason_logs": dict(from_logs),
        "killed_in_flight_by_event": dict(hurt.by_event),
        "recovery_kill_to_rerun_s": {
            "p50": round(analysis.percentile(recovery, 50), 2),
            "p100": round(analysis.percentile(recovery, 100), 2),
            "n": len(recovery),
        },
        "chaos_executed": dict(Counter(e["kind"] for e in run.executed)),
        "worker_exits_cause_code": dict(exits),
        "worker_starts": sum(slot.starts for slot in supervisor.slots),
        "kernel_oom_kills": run.oom_kills_seen_by_kernel,
        "redis": "AOF appendfsync always; restarts "
        + ", ".join(e["detail"] for e in run.executed if e["kind"] == "redis_restart"),
        "sentinel_failover": SENTINEL_NOTE,
        "chaos_s": round(chaos_seconds, 1),
        "settle_s": round(settle_seconds, 1),
        "duration_s": round(time.monotonic() - began, 1),
    }
    (tmp_path / "report.json").write_text(json.dumps({**report, "events": run.executed}, indent=2))
    say("[conformance] " + "\n[conformance] ".join(f"{key}: {value}" for key, value in report.items()))

    assert not lost, f"lost jobs: {lost[:20]}"
    assert not duplicate_effects, f"side effects applied more than once: {duplicate_effects}"
    assert not stuck, f"jobs stuck after the run: {stuck}"
    assert not unexpected_failures, f"jobs that should have completed failed: {unexpected_failures}"
    assert not not_failed, f"doomed jobs that did not end failed: {not_failed[:10]}"
    assert all(reason for reason in failed_reasons.values()), "a failed job has no recorded reason"
    for job in failed:
        assert int(r.hget(f"bull:{queue_of(job)}:{job}", "atm") or 0) == workload.ATTEMPTS, job
        assert effects[job] == 0, f"failed job {job} applied its side effect"
    assert not hurt.never_rerun, f"jobs in flight at a kill that never ran again: {hurt.never_rerun}"
    assert run.oom_kills_seen_by_kernel >= 1
    assert counts([ChaosEvent(0, e["kind"]) for e in run.executed]) == counts(plan)


def settled(r: Any) -> int:
    return sum(
        r.zcard(f"bull:{queue}:{state}")
        for queue in (workload.QUEUE, workload.HOG_QUEUE)
        for state in ("completed", "failed")
    )


def queue_of(job_id: str) -> str:
    return workload.HOG_QUEUE if job_id == workload.HOG_JOB_ID else workload.QUEUE


def produce(url: str, jobs: list[workload.PlannedJob], errors: list[BaseException]) -> None:
    """The rest of the jobs, 100 every 3 s while the chaos runs (through the Redis restarts)."""
    try:
        for start in range(0, len(jobs), 100):
            asyncio.run(workload.add_batch(url, jobs[start : start + 100]))
            time.sleep(3)
    except BaseException as err:
        errors.append(err)


def execute(
    event: ChaosEvent,
    supervisor: Supervisor,
    redis_server: AuthRedisServer,
    cgroup: Path,
    hog: workload.PlannedJob,
    run: Run,
) -> dict[str, Any]:
    """Do one planned event; returns what was done (for the report and the recovery figures)."""
    done: dict[str, Any] = {"kind": event.kind, "planned_at": event.at, "slot": event.slot, "detail": event.detail}
    started = time.time()
    if event.kind in ("sigkill", "sigterm"):
        assert event.slot is not None
        signum = signal.SIGKILL if event.kind == "sigkill" else signal.SIGTERM
        pid, at = supervisor.signal(event.slot, signum, event.kind)
        done["pid"] = pid
        if event.kind == "sigkill":
            run.kills.append(("sigkill", pid, at))
    elif event.kind == "sigstop":
        assert event.slot is not None
        pid, at = supervisor.freeze(event.slot, float(event.detail))
        done["pid"] = pid
        run.kills.append(("sigstop", pid, at))
    elif event.kind == "redis_restart":
        redis_server.stop(kill=event.detail == "crash")
        redis_server.start()
    elif event.kind == "client_pause":
        redis_server.cli("CLIENT", "PAUSE", event.detail)
    elif event.kind == "rolling_deploy":
        done["replaced"] = supervisor.rolling_deploy()
    elif event.kind == "oom_kill":
        assert event.slot is not None
        worker = supervisor.current(event.slot)
        before = oom_kill_count(cgroup)
        with supervisor.lock:
            supervisor.causes[worker.pid] = "oom_kill"
        (cgroup / "cgroup.procs").write_text(str(worker.pid))
        asyncio.run(workload.add_batch(redis_server.url, [hog], queue=workload.HOG_QUEUE))
        exit_ = supervisor.wait_exit_of(worker.pid, timeout=60)
        assert exit_.code == -signal.SIGKILL, f"the memory hog's worker exited with {exit_.code}, not an OOM kill"
        run.oom_kills_seen_by_kernel += oom_kill_count(cgroup) - before
        run.kills.append(("oom_kill", worker.pid, exit_.at))
        done["pid"] = worker.pid
    else:
        raise AssertionError(f"unknown chaos event {event.kind}")
    done["took_s"] = round(time.time() - started, 2)
    return done


def oom_kill_count(cgroup: Path) -> int:
    """The kernel's own count of OOM kills in the cgroup (proof it was not a signal from the suite)."""
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise AssertionError(f"no oom_kill counter in {cgroup}/memory.oom_control")
