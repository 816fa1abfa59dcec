"""The worker's memory as the kernel's OOM killer sees it: its cgroup's limit and usage.

Where the cgroup is: /proc/self/cgroup names it (v2: the `0::` line; v1: the line listing the
`memory` controller) and /proc/self/mountinfo says where that hierarchy is mounted and which part of
it the mount shows (a container sees its own cgroup as the mount's root). The job children of the
CPU sandbox are forked from the worker and stay in its cgroup, so they are counted too.

Usage is the working set, as the kubelet and cAdvisor define it: usage minus the inactive file cache
(v2 memory.current - memory.stat `inactive_file`; v1 memory.usage_in_bytes - memory.stat
`total_inactive_file`). The cgroup's usage includes the page cache of every file the worker read
(its own .py/.pyc files: tens of MiB on v1), and the kernel reclaims inactive cache before it
OOM-kills anything, so counting it would drain workers that are in no danger.

The parsing functions are pure (text in, numbers out) and tested on sample files; `CgroupMemory`
does the few small sysfs reads a sample costs (microseconds, no disk I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

V1_UNLIMITED_BYTES = 2**62
"""cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages: 9223372036854771712 with
4 KiB pages); anything this large is no limit."""


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo, the fields that matter here."""

    root: str
    """The path inside the filesystem (here: the cgroup hierarchy) that the mount shows."""
    mount_point: str
    fs_type: str
    super_options: frozenset[str]


@dataclass(frozen=True)
class MemoryCgroup:
    """The directory of this process's memory cgroup and the hierarchy's version (1 or 2)."""

    version: int
    directory: Path


@dataclass(frozen=True)
class MemorySample:
    usage_bytes: int
    limit_bytes: int | None


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as {controller: path}; the v2 line (`0::/path`) under the key ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def parse_mountinfo(text: str) -> list[Mount]:
    """Cgroup mounts of /proc/<pid>/mountinfo (`id parent major:minor root mount-point opts ... - type
    source super-opts`); other filesystems are left out."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 5 or len(fields) < separator + 3:
            continue
        fs_type = fields[separator + 1]
        if fs_type not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fs_type=fs_type,
                super_options=frozenset(fields[separator + 3].split(",")),
            )
        )
    return mounts


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def _within(mount: Mount, cgroup_path: str) -> Path | None:
    """The directory of `cgroup_path` under `mount`, or None if the mount does not show it."""
    root = mount.root.rstrip("/")
    if cgroup_path != root and not cgroup_path.startswith(root + "/") and root:
        return None
    relative = cgroup_path[len(root) :].lstrip("/")
    return Path(mount.mount_point) / relative if relative else Path(mount.mount_point)


def candidate_cgroups(proc_cgroup: str, mountinfo: str) -> list[MemoryCgroup]:
    """Where this process's memory cgroup may be, v2 first, then v1 (a hybrid host has both: the v2
    one counts only when its memory controller is enabled, i.e. memory.current exists)."""
    paths = parse_proc_cgroup(proc_cgroup)
    found: list[MemoryCgroup] = []
    mounts = parse_mountinfo(mountinfo)
    if "" in paths:
        for mount in mounts:
            if mount.fs_type == "cgroup2" and (directory := _within(mount, paths[""])) is not None:
                found.append(MemoryCgroup(2, directory))
    if "memory" in paths:
        for mount in mounts:
            if mount.fs_type != "cgroup" or "memory" not in mount.super_options:
                continue
            if (directory := _within(mount, paths["memory"])) is not None:
                found.append(MemoryCgroup(1, directory))
    return found


def parse_limit(text: str, version: int) -> int | None:
    """v2 memory.max ("max" = none) or v1 memory.limit_in_bytes (a huge number = none), in bytes."""
    value = text.strip()
    if value == "max":
        return None
    limit = int(value)
    if version == 1 and limit >= V1_UNLIMITED_BYTES:
        return None
    return limit


def parse_stat(text: str) -> dict[str, int]:
    """memory.stat as {name: value}."""
    stat: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            stat[name] = int(value)
    return stat


def v1_hierarchical_limit(stat: Mapping[str, int]) -> int | None:
    """The smallest limit of the cgroup and its ancestors (v1 memory.stat), None when unlimited."""
    limit = stat.get("hierarchical_memory_limit")
    return None if limit is None or limit >= V1_UNLIMITED_BYTES else limit


def working_set(usage_bytes: int, stat: Mapping[str, int], version: int) -> int:
    """Usage minus the inactive file cache (what the kernel reclaims before any OOM kill)."""
    inactive = stat.get("inactive_file" if version == 2 else "total_inactive_file", 0)
    return max(0, usage_bytes - inactive)


class CgroupMemory:
    """Reads one cgroup's memory; build it with `locate()`."""

    def __init__(self, cgroup: MemoryCgroup) -> None:
        self.cgroup = cgroup
        v2 = cgroup.version == 2
        self._usage = cgroup.directory / ("memory.current" if v2 else "memory.usage_in_bytes")
        self._limit = cgroup.directory / ("memory.max" if v2 else "memory.limit_in_bytes")
        self._stat = cgroup.directory / "memory.stat"

    @classmethod
    def locate(cls, proc: Path = Path("/proc/self")) -> CgroupMemory | None:
        """This process's memory cgroup, or None (not Linux, no memory controller, not readable)."""
        try:
            proc_cgroup = (proc / "cgroup").read_text()
            mountinfo = (proc / "mountinfo").read_text()
        except OSError:
            return None
        for cgroup in candidate_cgroups(proc_cgroup, mountinfo):
            reader = cls(cgroup)
            if reader._usage.is_file():
                return reader
        return None

    def limit_bytes(self) -> int | None:
        """The cgroup's limit; on v1 also its ancestors' (memory.stat `hierarchical_memory_limit`: an
        ECS task's limit may sit on the task's cgroup above the container's)."""
        try:
            own = parse_limit(self._limit.read_text(), self.cgroup.version)
            inherited = None
            if self.cgroup.version == 1:
                inherited = v1_hierarchical_limit(parse_stat(self._stat.read_text()))
        except (OSError, ValueError):
            return None
        known = [limit for limit in (own, inherited) if limit is not None]
        return min(known) if known else None

    def usage_bytes(self) -> int:
        """The working set (raises OSError if the cgroup went away)."""
        usage = int(self._usage.read_text().strip())
        return working_set(usage, parse_stat(self._stat.read_text()), self.cgroup.version)


def effective_limit_bytes(setting_mib: int | None, cgroup_limit: int | None) -> int | None:
    """The smaller of the explicit setting and the cgroup's own limit (a setting can only lower it:
    the kernel kills at the cgroup's limit whatever the setting says); None when neither is known."""
    known = [value for value in (setting_mib * 2**20 if setting_mib else None, cgroup_limit) if value]
    return min(known) if known else None
