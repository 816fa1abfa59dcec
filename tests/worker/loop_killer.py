"""A handler registry with a user bug that kills bullmq's processing loop (B4), for the CLI test.

The handler installs a raising 'failed' and 'error' listener on its bullmq Worker and fails: the
exception then escapes processJob into run()'s catch-all, which (unpatched) returns silently.
"""

from __future__ import annotations

from typing import Any

from killsafe_worker.handlers import JobContext


def _buggy_listener(*_: Any) -> None:
    raise RuntimeError("listener bug")


async def kill_the_loop(ctx: JobContext) -> None:
    bullmq_worker = ctx.job.queue  # a Job's `queue` is the Worker that fetched it
    bullmq_worker.on("failed", _buggy_listener)
    bullmq_worker.on("error", _buggy_listener)
    raise ValueError("this job fails, and the listeners then raise")


HANDLERS = {"kill-the-loop": kill_the_loop}
