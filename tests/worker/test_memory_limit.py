"""Issue 11.2: the worker finds its memory cgroup, limit and usage (pure parsing, on sample files), and
the settings, spec field and contract default that drive the drain before the OOM kill.

Samples: this machine's hybrid hierarchy (memory on v1), a Docker container on v1 (its cgroup is the
mount's root), a Kubernetes pod on v2 with a cgroup namespace, a systemd unit on v2, and memory.stat
of both versions (the v1 one read from this machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from killsafe import contract
from killsafe.app_env import worker_env
from killsafe_worker.config import SettingsError, load_worker_settings
from killsafe_worker.emf import EmfPublisher
from killsafe_worker.memory import (
    CgroupMemory,
    MemoryCgroup,
    candidate_cgroups,
    effective_limit_bytes,
    parse_limit,
    parse_mountinfo,
    parse_proc_cgroup,
    parse_stat,
    v1_hierarchical_limit,
    working_set,
)
from killsafe_worker.metrics import WorkerMetrics
from tests.kubernetes.k8s_specs import make_spec

SAMPLES = Path(__file__).parent / "memory_samples"
MIB = 2**20


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def _cgroups(name: str) -> list[MemoryCgroup]:
    return candidate_cgroups(_sample(f"{name}.cgroup"), _sample(f"{name}.mountinfo"))


def test_proc_cgroup_lines_by_controller() -> None:
    paths = parse_proc_cgroup(_sample("docker-v1.cgroup"))
    assert paths["memory"] == "/docker/3f2a9c" and paths["cpuacct"] == "/docker/3f2a9c"
    assert paths["name=systemd"] == "/docker/3f2a9c"
    assert paths[""] == "/system.slice/containerd.service", "the v2 line"


def test_mountinfo_keeps_cgroup_mounts_only() -> None:
    mounts = parse_mountinfo(_sample("docker-v1.mountinfo"))
    assert [(m.fs_type, m.root, m.mount_point) for m in mounts] == [
        ("cgroup", "/docker/3f2a9c", "/sys/fs/cgroup/memory"),
        ("cgroup", "/docker/3f2a9c", "/sys/fs/cgroup/cpu,cpuacct"),
    ]
    assert "memory" in mounts[0].super_options
    [escaped] = parse_mountinfo(r"1 2 0:3 /a\040b /sys/fs/cgroup/x rw - cgroup cgroup rw,memory")
    assert escaped.root == "/a b"


def test_hybrid_host_v2_candidate_first_then_the_v1_memory_controller() -> None:
    """This machine: / on the unified v2 mount (no memory controller there: memory.current is missing,
    so `locate` skips it), the memory cgroup on v1."""
    assert _cgroups("hybrid-v1") == [
        MemoryCgroup(2, Path("/sys/fs/cgroup/unified")),
        MemoryCgroup(1, Path("/sys/fs/cgroup/memory/killsafe/worker-1")),
    ]


def test_container_sees_its_own_cgroup_as_the_mount_root() -> None:
    assert _cgroups("docker-v1") == [MemoryCgroup(1, Path("/sys/fs/cgroup/memory"))]
    assert _cgroups("k8s-v2") == [MemoryCgroup(2, Path("/sys/fs/cgroup"))]


def test_systemd_unit_on_v2() -> None:
    assert _cgroups("systemd-v2") == [
        MemoryCgroup(2, Path("/sys/fs/cgroup/system.slice/system-emails\\x2dworker.slice/emails-worker@8080.service"))
    ]


def test_a_cgroup_outside_the_mounted_part_is_not_guessed() -> None:
    mountinfo = "1 2 0:3 /docker/other /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"
    assert candidate_cgroups("4:memory:/docker/3f2a9c\n", mountinfo) == []


def test_limits_v2_max_and_v1_unlimited_are_no_limit() -> None:
    assert parse_limit("max\n", 2) is None
    assert parse_limit("268435456\n", 2) == 256 * MIB
    assert parse_limit("9223372036854771712\n", 1) is None, "v1 'unlimited' (PAGE_COUNTER_MAX pages)"
    assert parse_limit("268435456\n", 1) == 256 * MIB
    assert v1_hierarchical_limit(parse_stat(_sample("v1.memory.stat"))) is None
    assert v1_hierarchical_limit({"hierarchical_memory_limit": 512 * MIB}) == 512 * MIB


def test_usage_is_the_working_set_without_inactive_file_cache() -> None:
    v1 = parse_stat(_sample("v1.memory.stat"))
    v2 = parse_stat(_sample("v2.memory.stat"))
    assert v1["total_inactive_file"] > 0 and v2["inactive_file"] == 43_655_168
    usage = 230_000_000
    assert working_set(usage, v1, 1) == usage - v1["total_inactive_file"]
    assert working_set(usage, v2, 2) == usage - 43_655_168
    assert working_set(10, v2, 2) == 0


def test_the_explicit_setting_can_only_lower_the_cgroup_limit() -> None:
    assert effective_limit_bytes(None, None) is None
    assert effective_limit_bytes(512, None) == 512 * MIB, "ECS: a task limit the container's cgroup may not show"
    assert effective_limit_bytes(None, 256 * MIB) == 256 * MIB
    assert effective_limit_bytes(512, 256 * MIB) == 256 * MIB, "the kernel kills at the cgroup's limit"
    assert effective_limit_bytes(128, 256 * MIB) == 128 * MIB


def test_locate_reads_this_process_cgroup() -> None:
    """On this machine (hybrid), the v1 memory cgroup of the test process; usage a plausible number."""
    memory = CgroupMemory.locate()
    if memory is None:
        pytest.skip("no memory cgroup visible")
    assert memory.usage_bytes() > 0


def test_default_threshold_is_derived_from_the_limit() -> None:
    assert contract.default_memory_drain_percent(4096) == 85
    assert contract.default_memory_drain_percent(512) == 85
    assert contract.default_memory_drain_percent(256) == 84, "40 MiB stay free above the threshold"
    assert contract.default_memory_drain_percent(128) == 68
    assert contract.default_memory_drain_percent(64) == 50, "never below 50 %"
    assert contract.memory_critical_percent(85) == 92.5


def test_worker_settings_and_their_errors() -> None:
    settings = load_worker_settings({contract.ENV_MEMORY_LIMIT_MIB: "512", contract.ENV_MEMORY_DRAIN_PERCENT: "90"})
    assert (settings.memory_limit_mib, settings.memory_drain_percent) == (512, 90)
    unset = load_worker_settings({})
    assert (unset.memory_limit_mib, unset.memory_drain_percent) == (None, None), "derived from the limit found"
    for value in ("49", "101", "85.5", "max"):
        with pytest.raises(SettingsError, match=contract.ENV_MEMORY_DRAIN_PERCENT):
            load_worker_settings({contract.ENV_MEMORY_DRAIN_PERCENT: value})
    with pytest.raises(SettingsError, match=contract.ENV_MEMORY_LIMIT_MIB):
        load_worker_settings({contract.ENV_MEMORY_LIMIT_MIB: "0"})


def test_every_target_gets_the_limit_and_threshold_from_the_spec() -> None:
    env = worker_env(make_spec(worker={"memory_mib": 256}), None)
    assert env[contract.ENV_MEMORY_LIMIT_MIB] == "256"
    assert env[contract.ENV_MEMORY_DRAIN_PERCENT] == "84"
    env = worker_env(make_spec(worker={"memory_mib": 256, "memory_drain_percent": 100}), None)
    assert env[contract.ENV_MEMORY_DRAIN_PERCENT] == "100", "off"


def test_the_exit_line_on_ecs_carries_the_memory_pressure_restart() -> None:
    """The drain is often shorter than a scrape or flush interval: the final EMF line must count it."""
    metrics = WorkerMetrics(["q"])
    publisher = EmfPublisher(metrics, "killsafe/test", write=lambda _text: None)
    assert contract.METRIC_MEMORY_PRESSURE_RESTARTS not in "".join(publisher.lines())
    metrics.memory_pressure_restarts.inc()
    [line] = [line for line in publisher.lines(final=True) if contract.METRIC_MEMORY_PRESSURE_RESTARTS in line]
    record = json.loads(line)
    assert record[contract.METRIC_MEMORY_PRESSURE_RESTARTS] == 1.0
    assert record[contract.EMF_TIER_DIMENSION] == contract.EMF_WORKER_TIER
    assert not any(contract.METRIC_MEMORY_PRESSURE_RESTARTS in line for line in publisher.lines()), "an increase"
