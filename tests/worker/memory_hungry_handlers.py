"""A handler registry for the drain-before-OOM tests: the demo handlers plus `hungry`, a job that holds
memory for a while and leaks a little.

Honest memory: both parts are anonymous mmap()s with every page written, not Python objects. A freed
bytearray may stay in the process (glibc keeps heap chunks under its dynamic mmap threshold, pymalloc
keeps arenas), which would make any worker look leaky; a closed mmap is unmapped at once, so what the
cgroup counts is exactly what the jobs hold. The leak (a module-level list, like a cache in a library
that never shrinks) is what a long-lived worker accumulates and what drain-and-restart is for.

Each execution records `<job id> <pid>` in STARTED_KEY when it starts and in FINISHED_KEY when it is
done, so a test can tell which executions a process took with it when it died.
"""

from __future__ import annotations

import asyncio
import mmap
import os
from typing import Any

from killsafe_worker.handlers import DEFAULT_HANDLERS, JobContext

STARTED_KEY = "killsafe-test:hungry:started"
FINISHED_KEY = "killsafe-test:hungry:finished"
MIB = 2**20
_ONE_MIB = b"\x01" * MIB
LEAKED: list[mmap.mmap] = []


def _touched(mib: float) -> mmap.mmap:
    """An anonymous mapping of `mib` MiB with every page written (so the cgroup is charged for it)."""
    size = max(1, int(mib * MIB))
    area = mmap.mmap(-1, size)
    for _ in range(size // MIB):
        area.write(_ONE_MIB)
    area.write(_ONE_MIB[: size % MIB])
    return area


async def hungry(ctx: JobContext) -> dict[str, Any]:
    """{"hold_mib": float, "leak_mib": float, "seconds": float}: hold, sleep, free, leak, record once."""
    data = ctx.data
    execution = f"{ctx.job.id} {os.getpid()}"
    await ctx.redis.rpush(STARTED_KEY, execution)
    held = _touched(float(data["hold_mib"]))
    try:
        await asyncio.sleep(float(data["seconds"]))
    finally:
        held.close()
    if data.get("leak_mib"):
        LEAKED.append(_touched(float(data["leak_mib"])))
    recorded = await ctx.record_side_effect()
    await ctx.redis.rpush(FINISHED_KEY, execution)
    return {"recorded": recorded, "pid": os.getpid()}


HANDLERS = {**DEFAULT_HANDLERS, "hungry": hungry}
