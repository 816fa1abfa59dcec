"""The conformance workload's handlers, loaded by real workers (KILLSAFE_HANDLERS=tests.conformance.handlers:HANDLERS).

Each wraps a demo handler or adds a failure mode, and appends every execution (start, end) to an
append-only ledger file per process, outside Redis: so duplicate *executions* (a re-run after a kill,
which is allowed) are counted apart from duplicate *side effects* (never allowed), and a Redis restart
cannot lose the ledger. The side effect itself is the worker's idempotency API
(`JobContext.record_side_effect`: SET NX on the job instance's key, then RPUSH to the side-effect list).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from killsafe_worker.handlers import DEFAULT_HANDLERS, JobContext, cpu_handler, sleep_handler

LEDGER_ENV = "KILLSAFE_CONFORMANCE_LEDGER"
"""Directory of the execution ledger: one `<pid>.jsonl` per worker process."""
_ledger_fd: int | None = None


def record(event: str, ctx: JobContext, **fields: Any) -> None:
    """One O_APPEND write per line: a SIGKILL cannot leave half a line, and it is in the page cache at once."""
    global _ledger_fd  # noqa: PLW0603 - one descriptor per process
    if _ledger_fd is None:
        directory = Path(os.environ[LEDGER_ENV])
        _ledger_fd = os.open(directory / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = {
        "ev": event,
        "job": str(ctx.job.id),
        "name": ctx.job.name,
        "attempt": ctx.job.attemptsMade + 1,
        "pid": os.getpid(),
        "t": time.time(),
        **fields,
    }
    os.write(_ledger_fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())


Handler = Callable[[JobContext], Awaitable[Any]]


def recorded(inner: Handler) -> Handler:
    async def run(ctx: JobContext) -> Any:
        record("start", ctx)
        outcome = "error"
        try:
            result = await inner(ctx)
            outcome = "ok"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            record("end", ctx, outcome=outcome)

    return run


async def flaky(ctx: JobContext) -> dict[str, Any]:
    """{"fail_times": n}: the first n attempts fail (retried with backoff), the next one succeeds."""
    if ctx.job.attemptsMade < int(ctx.data["fail_times"]):
        raise RuntimeError(f"flaky: attempt {ctx.job.attemptsMade + 1} fails on purpose")
    await asyncio.sleep(float(ctx.data.get("seconds", 0.01)))
    return {"recorded": await ctx.record_side_effect()}


async def doomed(ctx: JobContext) -> None:
    """Fails every attempt: ends in the failed set with this reason, and never applies its side effect."""
    raise RuntimeError(f"doomed: attempt {ctx.job.attemptsMade + 1} fails on purpose")


async def hog(ctx: JobContext) -> dict[str, Any]:
    """{"mib": n}: allocate n MiB in the worker process itself (touching every page), then record the
    side effect. Inside a memory cgroup smaller than that the kernel OOM killer kills the worker."""
    held = []
    for _ in range(int(ctx.data["mib"]) // 8):
        held.append(b"\x01" * (8 * 1024 * 1024))
        await asyncio.sleep(0.005)
    size = sum(len(chunk) for chunk in held)
    del held
    return {"held_bytes": size, "recorded": await ctx.record_side_effect()}


HANDLERS: dict[str, Handler] = {
    **DEFAULT_HANDLERS,
    "short": recorded(sleep_handler),
    "slow": recorded(sleep_handler),
    "delayed": recorded(sleep_handler),
    "prioritized": recorded(sleep_handler),
    "cpu": recorded(cpu_handler),
    "flaky": recorded(flaky),
    "doomed": recorded(doomed),
    "hog": recorded(hog),
}
