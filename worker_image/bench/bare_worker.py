"""The bare `bullmq` Python worker: the library alone, with a no-op processor.

It is the yardstick for the killsafe worker's own overhead (bench.py compares the two in the same
run): anything killsafe adds per job (health, metrics, lock fixes) shows up as the gap between them.

Usage: python bare_worker.py <redis-url> <queue> <concurrency> [--loop auto|asyncio|uvloop] [--fetch-next]
Prints "ready" once Redis answers; SIGTERM closes the worker (in-flight jobs finish) and exits 0.

--loop auto (the default) mirrors killsafe-worker: uvloop when importable, else the stdlib loop, so
the comparison measures what killsafe adds, not which event loop runs. redis-py uses hiredis by
itself whenever it is installed, for both.

--fetch-next is an experiment, not a recommendation as written: it measures what bullmq Python
would gain by fetching the next job in the same script call that completes one (as Node BullMQ
does: 1 round trip per job instead of 2). Only the no-op success path is covered.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import signal
import time
from typing import Any

from bullmq import Job, Worker
from redis.utils import HIREDIS_AVAILABLE


async def noop(job: Job, token: str) -> None:
    """Do nothing: the benchmark measures the queue machinery, not the work."""
    return None


class FetchNextWorker(Worker):  # type: ignore[misc]
    """Completes a job and claims the next one in one moveToFinished call, then runs it in the same slot."""

    async def processJob(self, job: Job, token: str) -> None:
        next_job: Job | None = job
        while next_job is not None:
            next_job = await self._process_one(next_job, token)

    async def _process_one(self, job: Job, token: str) -> Job | None:
        self.jobs.add((job, token))
        self.lockManager.track_job(job.id, token, int(time.time() * 1000), should_create_controller=False)
        try:
            result = await self.processor(job, token)
            fetch_next = not self.closing and not self.forceClosing
            done = await self.backend.moveToCompleted(
                job, result, job.opts.get("removeOnComplete", False), token, fetch_next=fetch_next
            )
            self.emit("completed", job, result)
            if fetch_next and done["result"]:
                job_data, job_id, limit_until, delay_until = done["result"]
                following: Job | None = await self.nextJobFromJobData(
                    job_data, job_id, limit_until or 0, delay_until or 0, token
                )
                return following
            return None
        except Exception as err:
            await job.moveToFailed(err, token)
            self.emit("failed", job, err)
            return None
        finally:
            self.jobs.discard((job, token))
            self.lockManager.untrack_job(job.id)


async def serve(url: str, queue: str, concurrency: int, fetch_next: bool = False) -> None:
    """Run one worker until SIGTERM, then close it gracefully."""
    options: Any = {"connection": url, "concurrency": concurrency, "autorun": False}
    worker = (FetchNextWorker if fetch_next else Worker)(queue, noop, options)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.backend.connection.getRedisVersion()
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"ready (loop: {loop_name}, hiredis: {HIREDIS_AVAILABLE})", flush=True)
    running = asyncio.create_task(worker.run())
    await stop.wait()
    await worker.close()
    await running


def main() -> None:
    """Parse the command line and run the worker on the chosen event loop."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("concurrency", type=int)
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop; auto = uvloop when importable (as killsafe-worker does)",
    )
    parser.add_argument("--fetch-next", action="store_true", help="experiment: 1 script call per job")
    args = parser.parse_args()
    serving = serve(args.url, args.queue, args.concurrency, args.fetch_next)
    use_uvloop = args.loop == "uvloop" or (args.loop == "auto" and importlib.util.find_spec("uvloop") is not None)
    if use_uvloop:
        uvloop = importlib.import_module("uvloop")  # optional dependency
        uvloop.run(serving)
    else:
        asyncio.run(serving)


if __name__ == "__main__":
    main()
