"""Issue 7.5: memory sizing against jobs in flight, and what happens when a job outgrows the limit.

`check` warns (exit 0) when the worker's memory leaves too little per in-flight job
(concurrency_per_queue x queues). Then a real worker runs in a real memory cgroup (the container's
limit) and a sandboxed job allocates past it, so the kernel's OOM killer, not an rlimit, acts.

What this machine can show: its memory controller is on cgroup v1 (hybrid hierarchy), where the OOM
killer kills one process, the biggest: the job's child. The worker survives, fails that job (the
child "killed by SIGKILL without a result") and keeps running its other jobs. On cgroup v2 the
kubelet (1.28+) sets memory.oom.group=1 on every container, so the same allocation kills the whole
container: the worker and every job in flight, which come back after lock_duration +
stalled_interval on another worker (README: Memory and concurrency). That group kill needs a v2 memory
controller and cannot be reproduced here; the v2 code path of the worker's OOM detection
(memory.events oom_kill) is therefore not exercised by this test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from killsafe import contract
from killsafe.checks import MIN_MIB_PER_JOB, WORKER_BASELINE_MIB
from killsafe.kubernetes.build import build_manifests
from killsafe.kubernetes.checks import check_kubernetes
from tests import cgroups
from tests.cgroups import oom_kills, require_memory_v1
from tests.conftest import RedisServer
from tests.kubernetes.k8s_specs import find, make_spec, stack_spec
from tests.worker.conftest import WorkerFactory, client, enqueue, job_hash, job_state, wait_for

LIMIT_MIB = 200


def _warnings(**worker: object) -> list[str]:
    spec = make_spec(worker=worker)
    return [str(f) for f in check_kubernetes(spec, build_manifests(spec)) if f.level == "warning"]


def test_check_warns_when_memory_per_in_flight_job_is_implausibly_small() -> None:
    """2 queues x 10 in 768 MiB (the old prod stack) leaves 35 MiB per job: a warning, not an error."""
    [warning] = _warnings(queues=["emails", "emails-bulk"], concurrency_per_queue=10, memory_mib=768)
    assert warning.startswith("KS003 (warning) Deployment/emails-worker: 768 MiB for 20 jobs in flight leaves 35 MiB")
    assert f"at least {WORKER_BASELINE_MIB + 20 * MIN_MIB_PER_JOB} MiB" in warning
    assert _warnings(queues=["emails", "emails-bulk"], concurrency_per_queue=10, memory_mib=864) == []
    assert _warnings(queues=["emails"], concurrency_per_queue=10, memory_mib=512) == []
    assert _warnings(queues=["emails"], concurrency_per_queue=1, memory_mib=64)  # the worker alone
    for stack in ("dev", "staging", "prod"):
        spec = stack_spec(stack)
        assert check_kubernetes(spec, build_manifests(spec)) == [], stack


def test_the_warning_reads_the_rendered_objects_so_a_hand_edit_is_caught() -> None:
    spec = make_spec(worker={"concurrency_per_queue": 2})
    manifests = build_manifests(spec)
    assert check_kubernetes(spec, manifests) == []
    [c] = find(manifests, "Deployment", "emails-worker")["spec"]["template"]["spec"]["containers"]
    for variable in c["env"]:
        if variable["name"] == contract.ENV_CONCURRENCY_PER_QUEUE:
            variable["value"] = "50"
    [finding] = check_kubernetes(spec, manifests)
    assert finding.level == "warning" and "for 50 jobs in flight" in finding.message


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A memory cgroup of our own (v1), limited like a container, removed afterwards."""
    require_memory_v1("creates a memory cgroup")
    with cgroups.memory_cgroup("k8s-oom", LIMIT_MIB * 2**20) as group:
        yield group


def test_a_sandboxed_job_over_the_container_limit(
    memory_cgroup: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    workers = WorkerFactory(redis_server, tmp_path)
    r = client(redis_server.url)
    try:
        # drain before the OOM kill off: a child that alone outgrows the limit may be seen rising by the
        # worker's memory sampler first, and then the worker drains and exits 4 for a restart (no
        # orchestrator here restarts it). That path is tests/worker/test_memory_pressure.py's.
        off = {contract.ENV_MEMORY_DRAIN_PERCENT: str(contract.MEMORY_DRAIN_OFF)}
        worker = workers.start(concurrency=2, wait_ready=False, env=off)
        (memory_cgroup / "cgroup.procs").write_text(str(worker.pid))  # before the fork server starts
        worker.wait_ready()
        survivor = enqueue(redis_server.url, "sleep", {"seconds": 6})
        hog = enqueue(redis_server.url, "cpu", {"seconds": 1, "allocate_mib": LIMIT_MIB * 2})
        wait_for(lambda: job_state(r, hog) == "failed", 60, "the job over the memory limit to fail")

        assert oom_kills(memory_cgroup) >= 1, "the kernel's OOM killer acted (not an rlimit)"
        reason = job_hash(r, hog)["failedReason"]
        print(f"cgroup v1 OOM kill: failedReason={reason!r}")
        assert "killed by SIGKILL without a result" in reason
        interrupted = {
            why: worker.metric(contract.METRIC_JOBS_INTERRUPTED, {"queue": "jobs", "reason": why})
            for why in ("child_crashed", "child_oom")
        }
        assert sum(interrupted.values()) == 1, interrupted  # v1 reports child_crashed (no memory.events)

        wait_for(lambda: job_state(r, survivor) == "completed", 30, "the other in-flight job to finish")
        assert worker.proc.poll() is None, "on cgroup v1 only the biggest process (the child) is killed"
        assert worker.status(contract.LIVE_PATH) == 200
        after = enqueue(redis_server.url, "echo", {"still": "working"})
        wait_for(lambda: job_state(r, after) == "completed", 30, "a job after the OOM kill")
    finally:
        workers.cleanup()
