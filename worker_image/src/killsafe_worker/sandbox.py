"""Run CPU-bound or crash-prone job code in a child process, awaited without blocking the event loop.

bullmq (Python) has no sandboxed processors: a processor runs on the worker's event loop, and a loop
blocked longer than the lock duration makes another worker re-run the job. Here each call gets its
own child from a `forkserver` (fast to fork, no inherited event loop or Redis sockets), the parent
waits on file descriptors through the loop, and any crash, OOM or kill of the child becomes a
`ChildFailed` that fails only that job. Cancelling the awaiting task (drain deadline) kills the child.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import resource
import signal
import traceback
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

_CONTEXT = multiprocessing.get_context("forkserver")
_forkserver_ready: asyncio.Lock | None = None
PR_SET_PDEATHSIG = 1
EXIT_GRACE_SECONDS = 5.0
"""How long a child that already sent its result may take to exit before it is killed."""


class ChildFailed(Exception):
    """The child died or raised; `reason` is "child_crashed"/"child_oom" (contract.INTERRUPT_REASONS) or
    "child_error" (the job's own exception, an ordinary failure)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _child_main(
    result_pipe: multiprocessing.connection.Connection,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    memory_limit_bytes: int | None,
    worker_pid: int,
) -> None:
    """Entry point in the child: run `target`, send ("ok", value) or ("error"/"oom", text) back."""
    # A process-group SIGINT/SIGTERM (Ctrl-C, `kill -TERM -pgid`) must not kill work the parent is
    # still draining; the parent alone decides, and it uses SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    if _orphaned(worker_pid):  # the fork server (or the worker) died before the request above took effect
        os._exit(1)
    if memory_limit_bytes is not None:
        baseline = _virtual_memory_bytes()
        resource.setrlimit(resource.RLIMIT_AS, (baseline + memory_limit_bytes, baseline + memory_limit_bytes))
    try:
        outcome: tuple[str, Any] = ("ok", target(*args))
    except MemoryError:
        outcome = ("oom", f"out of memory (limit {memory_limit_bytes} bytes above baseline)")
    except BaseException as err:  # report everything; the parent turns it into a job failure
        outcome = ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
    result_pipe.send(outcome)
    result_pipe.close()


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (the worker for the fork server, the fork server for
    a job child), so a SIGKILLed worker leaves no orphan burning CPU. Linux only; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _orphaned(worker_pid: int) -> bool:
    """True when this job child's parent is no longer the worker's fork server (it was reparented)."""
    grandparent = _parent_pid(os.getppid())
    return grandparent is not None and grandparent != worker_pid


def _virtual_memory_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _cgroup_oom_kills() -> int | None:
    """oom_kill count of this process's cgroup (v2), to tell an OOM kill from another SIGKILL."""
    try:
        relative = Path("/proc/self/cgroup").read_text().strip().splitlines()[-1].split(":", 2)[2]
        for line in Path(f"/sys/fs/cgroup{relative}/memory.events").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, IndexError, ValueError):
        return None
    return None


async def _readable(*fds: int) -> None:
    """Wait until any of `fds` is readable (data or EOF), through the event loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)


async def _ensure_forkserver() -> None:
    """Start the fork server once, in a thread (it spawns a fresh interpreter: ~100 ms)."""
    global _forkserver_ready  # noqa: PLW0603 (one fork server per process)
    if _forkserver_ready is None:
        _forkserver_ready = asyncio.Lock()
    async with _forkserver_ready:
        multiprocessing.forkserver.set_forkserver_preload(["killsafe_worker.sandbox_forkserver"])
        await asyncio.to_thread(multiprocessing.forkserver.ensure_running)


async def _reap(process: BaseProcess, timeout: float) -> int | None:
    """Wait for the child to exit (SIGKILL it after `timeout`) and return its exit code."""
    try:
        await asyncio.wait_for(_readable(process.sentinel), timeout)
    except TimeoutError:
        process.kill()
        await _readable(process.sentinel)
    process.join()
    exitcode = process.exitcode
    process.close()
    return exitcode


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


async def run_in_child(
    target: Callable[..., Any],
    *args: Any,
    memory_limit_bytes: int | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Any:
    """Run `target(*args)` (picklable, importable) in a child process and return its result.

    `on_start(pid)` runs once the child exists (e.g. to log its pid). Raises ChildFailed when the
    child raises, runs out of memory or dies. If the awaiting task is cancelled the child is killed
    before the cancellation propagates.
    """
    await _ensure_forkserver()
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(
        target=_child_main,
        args=(sender, target, args, memory_limit_bytes, os.getpid()),
        daemon=True,
        name="killsafe-job",
    )
    oom_kills_before = _cgroup_oom_kills()
    process.start()
    sender.close()
    if on_start is not None and process.pid is not None:
        on_start(process.pid)
    outcome: tuple[str, Any] | None = None
    try:
        try:
            await _readable(receiver.fileno(), process.sentinel)
            if receiver.poll():
                outcome = receiver.recv()
        except EOFError:
            outcome = None
        except BaseException:  # cancelled (drain deadline) or failed: the child must not outlive the job
            process.kill()
            await asyncio.shield(_reap(process, EXIT_GRACE_SECONDS))
            raise
        exitcode = await _reap(process, EXIT_GRACE_SECONDS)
    finally:
        receiver.close()
    if outcome is None:
        oom_kills_after = _cgroup_oom_kills()
        out_of_memory = (
            oom_kills_before is not None and oom_kills_after is not None and oom_kills_after > oom_kills_before
        )
        reason = "child_oom" if out_of_memory else "child_crashed"
        raise ChildFailed(f"job child process {_describe_exit(exitcode)} without a result", reason)
    kind, value = outcome
    if kind == "ok":
        return value
    if kind == "oom":
        raise ChildFailed(f"job child process ran {value}", "child_oom")
    raise ChildFailed(f"job child process raised {value}", "child_error")
