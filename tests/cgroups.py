"""Real cgroup v1 memory cgroups for the tests that need the kernel's OOM killer (not a signal).

These machines mount the memory controller on cgroup v1 (hybrid hierarchy). A cgroup here stands for a
container's: a limit, no swap escape, and on removal every process still in it is SIGKILLed first.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_root

MEMORY_V1 = Path("/sys/fs/cgroup/memory")


def require_memory_v1(why: str) -> None:
    """Root and a v1 memory controller; fail in CI, skip elsewhere."""
    require_root(why)
    if not (MEMORY_V1 / "memory.limit_in_bytes").exists():
        reason = f"no cgroup v1 memory controller at {MEMORY_V1} ({why})"
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


def create_memory_cgroup(name: str, limit_bytes: int, *, swappiness_zero: bool = False) -> Path:
    """`<MEMORY_V1>/killsafe-<name>-<pid>` limited to `limit_bytes`, swap included where the kernel
    accounts it. Call `require_memory_v1` first; remove it with `remove_memory_cgroup`."""
    group = MEMORY_V1 / f"killsafe-{name}-{os.getpid()}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
    if (group / "memory.memsw.limit_in_bytes").exists():
        (group / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))  # no swap escape
    if swappiness_zero:
        (group / "memory.swappiness").write_text("0")
    return group


def remove_memory_cgroup(group: Path) -> None:
    """SIGKILL what is left in it, wait for it to empty, remove it."""
    for pid in (group / "cgroup.procs").read_text().split():
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    group.rmdir()


@contextmanager
def memory_cgroup(name: str, limit_bytes: int, *, swappiness_zero: bool = False) -> Iterator[Path]:
    group = create_memory_cgroup(name, limit_bytes, swappiness_zero=swappiness_zero)
    try:
        yield group
    finally:
        remove_memory_cgroup(group)


def oom_kills(group: Path) -> int:
    """The kernel's OOM kills in this cgroup (memory.oom_control `oom_kill`, kernel >= 4.13)."""
    for line in (group / "memory.oom_control").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    raise AssertionError("memory.oom_control has no oom_kill counter (kernel < 4.13)")
