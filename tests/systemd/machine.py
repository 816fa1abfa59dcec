"""A real systemd (PID 1 of a systemd-nspawn machine) booted from the cached rootfs, for the behaviour suite.

The host's PID 1 is not systemd, so nspawn (`--keep-unit --register=no`) runs in cgroups this module
creates under the test's own (unified, name=systemd and the v1 memory hierarchy on a hybrid host) and
removes again, killing anything left in them, whatever happened. The rootfs is booted read-only
under a tmpfs overlay (`--volatile=overlay`), so the content-addressed cache never changes; the
worker's venv and the rendered folder are bind-mounted read-only. The machine shares the host's
network: the suite picks free ports, and talks to the machine's Redis and health ports directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BOOT_TIMEOUT = 60.0


def own_cgroups() -> list[Path]:
    """This process's cgroup folder in each hierarchy nspawn uses: the unified one alone on a pure
    cgroup v2 host; unified, name=systemd and memory (v1) on a hybrid one."""
    lines = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return [Path("/sys/fs/cgroup") / path.lstrip("/") for number, _, path in lines if number == "0"]
    found = []
    for number, controllers, path in lines:
        names = controllers.split(",")
        if number == "0":
            found.append(Path("/sys/fs/cgroup/unified") / path.lstrip("/"))
        elif "name=systemd" in names:
            found.append(Path("/sys/fs/cgroup/systemd") / path.lstrip("/"))
        elif "memory" in names:
            found.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/"))
    return [folder for folder in found if folder.exists()]


def _remove_cgroup(root: Path) -> None:
    """Kill whatever is left in `root` and below, then remove the folders, deepest first."""
    if not root.exists():
        return
    for _ in range(50):
        pids = [int(p) for f in root.rglob("cgroup.procs") for p in f.read_text().split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


@dataclass
class Machine:
    rootfs: Path
    binds: dict[str, Path]
    """Container path -> host path, bound read-only."""
    log_path: Path
    name: str = field(default_factory=lambda: f"ksci-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen[bytes] | None = None
    leader: int | None = None
    cgroups: list[Path] = field(default_factory=list)

    def boot(self) -> float:
        started = time.monotonic()
        self.cgroups = [folder / self.name for folder in own_cgroups()]
        for folder in self.cgroups:
            folder.mkdir()
        procs = " ".join(str(folder / "cgroup.procs") for folder in self.cgroups)
        binds = [f"--bind-ro={host}:{inside}" for inside, host in self.binds.items()]
        nspawn = [
            "systemd-nspawn",
            "-D",
            str(self.rootfs),
            "--volatile=overlay",
            "-b",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "-M",
            self.name,
            *binds,
            "--",
            "systemd.firstboot=off",
        ]
        # The wrapper shell joins the new cgroups, then becomes nspawn.
        script = f'for f in {procs}; do echo $$ > "$f"; done; exec "$@"'
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["sh", "-c", script, "sh", *nspawn],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.leader is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn did not start:\n{self.log_path.read_text(errors='replace')}")
            found = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], capture_output=True, text=True)
            if found.stdout.strip():
                self.leader = int(found.stdout.split()[0])
            else:
                time.sleep(0.05)
        while True:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"machine stuck in state {state!r}:\n{self.run('systemctl', '--failed', check=False).stdout}"
                )
            time.sleep(0.1)
        # nspawn mounts the v1 memory hierarchy read-only on a hybrid host: writable, and PID 1
        # re-probes it, so MemoryMax= is enforced.
        mounts = self.run("cat", "/proc/1/mountinfo").stdout
        if any(" /sys/fs/cgroup/memory " in line and " ro," in line for line in mounts.splitlines()):
            self.run("mount", "-o", "remount,bind,rw", "/sys/fs/cgroup/memory")
            self.run("systemctl", "daemon-reexec")
            self.wait_running()
        return time.monotonic() - started

    def wait_running(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("systemctl", "is-system-running", check=False).stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise RuntimeError("systemd did not come back after daemon-reexec")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if self.leader is None:
            raise RuntimeError("machine not booted")
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def sh(self, script: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check, timeout=timeout)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("install", "-D", "-m", mode, "/dev/stdin", path, stdin=text)

    def prop(self, unit: str, name: str) -> str:
        return self.run("systemctl", "show", "-P", name, unit).stdout.strip()

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "-b", "-q", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def wait_prop(self, unit: str, name: str, wanted: str, timeout: float) -> float:
        """Seconds until `systemctl show -P name unit` == wanted."""
        started = time.monotonic()
        while True:
            value = self.prop(unit, name)
            if value == wanted:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{unit} {name}={value!r}, not {wanted!r}, after {timeout}s:\n{self.journal(unit)[-3000:]}"
                )
            time.sleep(0.1)

    def shutdown(self) -> None:
        """Power off (SIGTERM to nspawn = a clean shutdown), kill if it hangs, remove the cgroups."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            for folder in self.cgroups:
                _remove_cgroup(folder)


@contextlib.contextmanager
def booted(machine: Machine) -> Iterator[Machine]:
    try:
        machine.boot()
        yield machine
    finally:
        machine.shutdown()
