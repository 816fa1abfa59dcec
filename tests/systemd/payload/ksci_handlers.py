"""Handlers with the bugs the systemd behaviour suite needs, on top of the demo set.

Loaded inside the nspawn machine through a drop-in (KILLSAFE_HANDLERS=ksci_handlers:HANDLERS,
PYTHONPATH=<this folder>) on the instances that need them; everything else is the real worker.
"""

from __future__ import annotations

import time
from typing import Any

from killsafe_worker.handlers import DEFAULT_HANDLERS, JobContext


async def block_the_loop(ctx: JobContext) -> None:
    """A handler calling blocking code on the event loop: no tick, no WATCHDOG=1, SIGTERM not handled."""
    time.sleep(float(ctx.job.data.get("seconds", 600)))


async def allocate_until_killed(ctx: JobContext) -> None:
    """Touches 8 MiB more every 20 ms in the worker process itself, far past any MemoryMax."""
    hoard: list[bytes] = []
    for _ in range(100_000):
        hoard.append(b"\x01" * (8 << 20))
        time.sleep(0.02)


HANDLERS: dict[str, Any] = {**DEFAULT_HANDLERS, "block": block_the_loop, "alloc": allocate_until_killed}
