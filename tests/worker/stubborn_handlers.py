"""A handler registry for the job-budget tests: the demo handlers plus one that ignores cancellation
(a user bug the worker cannot fix by cancelling; liveness must catch it) and one that logs a URL
with the password in it (the log scrubber must catch it)."""

from __future__ import annotations

import asyncio
import logging

from killsafe_worker.handlers import DEFAULT_HANDLERS, JobContext


async def ignores_cancellation(_ctx: JobContext) -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # the bug: swallowing the cancellation


async def logs_a_secret(ctx: JobContext) -> None:
    logging.getLogger("user.handler").warning("connecting to %s", ctx.data["url"])


HANDLERS = {**DEFAULT_HANDLERS, "stubborn": ignores_cancellation, "leaky": logs_a_secret}
