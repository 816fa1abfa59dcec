"""A small test supervisor: N slots, each running one real `killsafe-worker`, restarted whenever it
exits (whatever the exit code, a short delay later), as Kubernetes, ECS or systemd would. It kills,
freezes and thaws workers on request, rolls a deploy, and scrapes every live worker's /metrics so a
worker's counters survive its death."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from killsafe_worker import contract
from tests.worker.conftest import WorkerProcess

RESTART_DELAY_SECONDS = 0.3
SCRAPE_INTERVAL_SECONDS = 0.5


@dataclass
class Exit:
    slot: int
    pid: int
    at: float
    """time.time() the supervisor saw it exit (within the 50 ms poll)."""
    code: int
    cause: str
    """What the suite did to it (sigkill, sigterm, deploy, oom_kill) or "unexpected"."""


@dataclass
class Slot:
    index: int
    start: Callable[[], WorkerProcess]
    current: WorkerProcess | None = None
    restart_at: float | None = None
    starts: int = 0


@dataclass
class Supervisor:
    starters: list[Callable[[], WorkerProcess]]
    restart_delay: float = RESTART_DELAY_SECONDS
    slots: list[Slot] = field(init=False)
    retired: list[tuple[int, WorkerProcess]] = field(default_factory=list)
    """Workers replaced by the rolling deploy, draining after their SIGTERM."""
    exits: list[Exit] = field(default_factory=list)
    causes: dict[int, str] = field(default_factory=dict)
    """pid -> what the suite did to it, for the exit record."""
    interrupted: dict[tuple[int, str], float] = field(default_factory=dict)
    """(pid, reason) -> last scraped killsafe_jobs_interrupted_total."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.slots = [Slot(index, start) for index, start in enumerate(self.starters)]

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        with self.lock:
            for slot in self.slots:
                self._launch(slot)
        for target in (self._watch, self._scrape):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop supervising (no more restarts), then kill what still runs."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with self.lock:  # exits the watcher had no time to see (a kill just before the end)
            seen = {e.pid for e in self.exits}
            for index, worker in [(s.index, s.current) for s in self.slots if s.current] + self.retired:
                if worker.proc.poll() is not None and worker.pid not in seen:
                    self._record_exit(index, worker, time.time())
        self.scrape_once()
        for worker in self.all_workers():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)
                worker.proc.kill()
                worker.proc.wait(timeout=10)

    def _launch(self, slot: Slot) -> None:
        slot.current = slot.start()
        slot.restart_at = None
        slot.starts += 1

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            with self.lock:
                for slot in self.slots:
                    worker = slot.current
                    if worker is not None and worker.proc.poll() is not None:
                        self._record_exit(slot.index, worker, now)
                        slot.current = None
                        slot.restart_at = now + self.restart_delay
                    if slot.current is None and slot.restart_at is not None and now >= slot.restart_at:
                        self._launch(slot)
                for index, worker in list(self.retired):
                    if worker.proc.poll() is not None and not any(e.pid == worker.pid for e in self.exits):
                        self._record_exit(index, worker, now)
            time.sleep(0.05)

    def _record_exit(self, index: int, worker: WorkerProcess, now: float) -> None:
        code = worker.proc.returncode
        self.exits.append(Exit(index, worker.pid, now, code, self.causes.get(worker.pid, "unexpected")))

    # --- what the chaos does ----------------------------------------------------------------------

    def current(self, index: int, timeout: float = 60.0) -> WorkerProcess:
        """The slot's worker, waiting for a restart in progress; ready (answering /readyz 200)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                worker = self.slots[index].current
            if (
                worker is not None
                and worker.pid not in self.causes  # already signalled: terminating, as an orchestrator sees it
                and worker.proc.poll() is None
                and worker.status(contract.READY_PATH) == 200
            ):
                return worker
            time.sleep(0.05)
        raise AssertionError(f"slot {index} has no ready worker after {timeout}s")

    def signal(self, index: int, signum: signal.Signals, cause: str) -> tuple[int, float]:
        """Send `signum` to the slot's current worker; (pid, time.time() of the signal)."""
        worker = self.current(index)
        self.scrape_worker(worker)
        with self.lock:
            self.causes[worker.pid] = cause
            os.kill(worker.pid, signum)
            return worker.pid, time.time()

    def freeze(self, index: int, seconds: float) -> tuple[int, float]:
        """SIGSTOP for `seconds` (past its lock: its jobs are re-run elsewhere), then SIGCONT."""
        worker = self.current(index)
        os.kill(worker.pid, signal.SIGSTOP)
        stopped = time.time()
        time.sleep(seconds)
        os.kill(worker.pid, signal.SIGCONT)
        return worker.pid, stopped

    def rolling_deploy(self, ready_timeout: float = 60.0) -> list[int]:
        """Replace every worker one by one: start the new one, wait until it is ready, SIGTERM the
        old one (it drains while the next slot is replaced). Returns the replaced pids."""
        replaced = []
        for slot in self.slots:
            old = self.current(slot.index)
            new = slot.start()
            try:
                new.wait_ready(ready_timeout)
            except AssertionError:
                new.proc.kill()
                raise
            self.scrape_worker(old)
            with self.lock:
                if slot.current is old:
                    slot.current = new
                    slot.starts += 1
                    self.retired.append((slot.index, old))
                else:  # the old one died meanwhile and was restarted: the new one is surplus
                    self.retired.append((slot.index, new))
                    old = new
                self.causes[old.pid] = "deploy"
                old.send(signal.SIGTERM)
            replaced.append(old.pid)
        return replaced

    def wait_exit_of(self, pid: int, timeout: float) -> Exit:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = next((e for e in self.exits if e.pid == pid), None)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"worker {pid} did not exit within {timeout}s")

    def all_workers(self) -> list[WorkerProcess]:
        with self.lock:
            live = [slot.current for slot in self.slots if slot.current is not None]
            return live + [worker for _, worker in self.retired]

    # --- metrics ----------------------------------------------------------------------------------

    def _scrape(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_SECONDS):
            self.scrape_once()

    def scrape_once(self) -> None:
        for worker in self.all_workers():
            if worker.proc.poll() is None:
                self.scrape_worker(worker)

    def scrape_worker(self, worker: WorkerProcess) -> None:
        """Remember the worker's interrupted-job counters (they die with the process)."""
        try:
            _, body = worker.get(contract.METRICS_PATH, timeout=0.5)
        except OSError:
            return
        prefix = contract.METRIC_JOBS_INTERRUPTED + "{"
        for line in body.splitlines():
            if line.startswith(prefix):
                labels = dict(
                    part.split("=", 1) for part in line[len(prefix) : line.index("}")].split(",") if "=" in part
                )
                reason = labels.get("reason", "").strip('"')
                value = float(line.rsplit(" ", 1)[1])
                with self.lock:
                    key = (worker.pid, reason)
                    self.interrupted[key] = max(value, self.interrupted.get(key, 0.0))

    def interrupted_by_reason(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        with self.lock:
            for (_, reason), value in self.interrupted.items():
                totals[reason] = totals.get(reason, 0) + int(value)
        return totals
