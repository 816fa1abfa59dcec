"""Regression tests for every bullmq workaround in killsafe_worker.adapter, against a real Redis.

Each bug runs twice: on the bare library, asserting the bug is still there (if one of these fails
after a bullmq or redis-py upgrade, the bug is fixed upstream: delete the workaround and this
variant), and with the workaround, asserting it is gone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from bullmq import Queue, Worker

from killsafe_worker import adapter
from tests.conftest import RedisServer

Fix = Callable[[Worker], Awaitable[None] | None]


async def _apply(fix: Fix | None, worker: Worker) -> None:
    if fix is not None:
        outcome = fix(worker)
        if outcome is not None:
            await outcome


def _worker(url: str, queue: str, processor: Callable[..., Awaitable[Any]], **opts: Any) -> Worker:
    return Worker(queue, processor, {"connection": url, "autorun": False, **opts})


async def _fresh_queue(url: str, name: str) -> Queue:
    queue = Queue(name, {"connection": url})
    await queue.obliterate(force=True)
    return queue


# --- B1: close() with concurrency >= 2 drops the locks of running jobs ----------------------------


async def _runs_per_job_after_close(url: str, fix: Fix | None) -> Counter[str]:
    """Worker A (concurrency 2: one slot runs a 4 s job, one waits for more) closes; worker B's
    stalled-job check then tells whether A still renews the running job's lock."""
    starts: Counter[str] = Counter()

    async def slow(job: Any, _token: str) -> None:
        starts[job.id] += 1
        await asyncio.sleep(4)

    opts = {"concurrency": 2, "lockDuration": 2000, "stalledInterval": 1000}
    queue = await _fresh_queue(url, "b1")
    first, second = _worker(url, "b1", slow, **opts), _worker(url, "b1", slow, **opts)
    for worker in (first, second):
        await _apply(fix, worker)
    await queue.add("slow", {})
    first_run = asyncio.ensure_future(first.run())
    while not starts:
        await asyncio.sleep(0.02)
    second_run = asyncio.ensure_future(second.run())
    await asyncio.sleep(0.3)
    await first.close()  # waits for its jobs; meanwhile B's stalled check sees whether A's locks live
    await asyncio.sleep(1.5)  # a re-run started by B shows up by now (the locks expired long ago)
    await second.close(force=True)
    await asyncio.gather(first_run, second_run, return_exceptions=True)
    await queue.close()
    return starts


def test_b1_bare_close_lets_running_jobs_be_run_twice(redis_server: RedisServer):
    starts = asyncio.run(_runs_per_job_after_close(redis_server.url, None))
    assert max(starts.values()) >= 2, f"B1 seems fixed upstream: {starts}"


def test_b1_deferred_lock_close_runs_each_job_once(redis_server: RedisServer):
    starts = asyncio.run(_runs_per_job_after_close(redis_server.url, adapter.defer_lock_manager_close))
    assert list(starts.values()) == [1], starts


# --- B2: delayed jobs ~1 s late (blocking waits rounded up to whole seconds) ---------------------


async def _delay_lateness_ms(url: str, fix: Fix | None, delay_ms: int = 1100, rounds: int = 3) -> float:
    """Median lateness of delayed jobs picked up by an idle worker."""
    ran: asyncio.Queue[float] = asyncio.Queue()

    async def record(_job: Any, _token: str) -> None:
        ran.put_nowait(time.time())

    queue = await _fresh_queue(url, "b2")
    worker = _worker(url, "b2", record)
    await _apply(fix, worker)
    run = asyncio.ensure_future(worker.run())
    lateness = []
    for _ in range(rounds):
        await asyncio.sleep(0.3)  # idle: blocked waiting for a marker
        due = time.time() + delay_ms / 1000
        await queue.add("later", {}, {"delay": delay_ms})
        lateness.append((await asyncio.wait_for(ran.get(), 10) - due) * 1000)
    await worker.close()
    await run
    await queue.close()
    return statistics.median(lateness)


def test_b2_bare_delayed_jobs_run_about_a_second_late(redis_server: RedisServer):
    late = asyncio.run(_delay_lateness_ms(redis_server.url, None))
    assert late > 500, f"B2 seems fixed upstream: delayed jobs only {late:.0f} ms late"


def test_b2_exact_block_timeouts_run_delayed_jobs_on_time(redis_server: RedisServer):
    late = asyncio.run(_delay_lateness_ms(redis_server.url, adapter.use_exact_block_timeouts))
    assert late < 400, f"delayed jobs still {late:.0f} ms late"


# --- B3: 20 s-capped exponential reconnect backoff ----------------------------------------------


async def _resume_after_restart(server: RedisServer, fix: Fix | None) -> float:
    """Seconds from Redis being back (after 2.5 s down) to a new job running on an idle worker."""
    ran = asyncio.Event()

    async def record(_job: Any, _token: str) -> None:
        ran.set()

    queue = await _fresh_queue(server.url, "b3")
    worker = _worker(server.url, "b3", record)
    await _apply(fix, worker)
    await adapter.use_exact_block_timeouts(worker)
    run = asyncio.ensure_future(worker.run())
    await asyncio.sleep(0.5)
    await queue.close()
    await asyncio.to_thread(server.restart, 2.5)
    back = time.monotonic()
    queue = Queue("b3", {"connection": server.url})  # a fresh producer: the test measures the worker
    await queue.add("after-restart", {})
    await asyncio.wait_for(ran.wait(), 60)
    resumed = time.monotonic() - back
    await worker.close()
    await run
    await queue.close()
    return resumed


def test_b3_bare_worker_resumes_seconds_after_redis_returns(redis_server: RedisServer):
    resumed = asyncio.run(_resume_after_restart(redis_server, None))
    assert resumed > 1.5, f"B3 seems fixed upstream: resumed {resumed:.2f}s after Redis returned"


def test_b3_fast_reconnect_resumes_at_once(redis_server: RedisServer):
    resumed = asyncio.run(_resume_after_restart(redis_server, adapter.use_fast_reconnect))
    assert resumed < 1.2, f"resumed only {resumed:.2f}s after Redis returned"


# --- B4: run() dies silently on an unexpected error ---------------------------------------------


async def _kill_the_loop(url: str, supervised: bool) -> tuple[asyncio.Task[None], Worker, Queue]:
    """An exception escaping processJob (here: raising 'failed' and 'error' listeners, a plain user
    bug) reaches run()'s catch-all, which prints it and returns."""

    async def failing(_job: Any, _token: str) -> None:
        raise ValueError("job failed")

    def buggy_listener(*_: Any) -> None:
        raise RuntimeError("listener bug")

    if supervised:
        adapter.route_library_tracebacks_to_logging()
    queue = await _fresh_queue(url, "b4")
    worker = _worker(url, "b4", failing)
    worker.on("failed", buggy_listener)
    worker.on("error", buggy_listener)
    run = asyncio.ensure_future(adapter.run_supervised(worker) if supervised else worker.run())
    await queue.add("fails", {})
    await asyncio.wait({run}, timeout=10)
    return run, worker, queue


def test_b4_bare_run_loop_stops_silently(redis_server: RedisServer):
    async def scenario() -> None:
        run, worker, queue = await _kill_the_loop(redis_server.url, supervised=False)
        assert run.done() and run.exception() is None, "B4 seems fixed upstream: run() did not just return"
        assert not worker.closing
        job = await queue.add("never-processed", {})
        await asyncio.sleep(1.0)
        assert await queue.getJobState(job.id) == "waiting"  # alive-looking worker, processing nothing
        await worker.close()
        await queue.close()

    asyncio.run(scenario())


def test_b4_supervised_run_raises_instead(redis_server: RedisServer):
    async def scenario() -> None:
        run, worker, queue = await _kill_the_loop(redis_server.url, supervised=True)
        assert run.done()
        with pytest.raises(adapter.ProcessingLoopDied, match="listener bug"):
            run.result()
        await worker.close()
        await queue.close()

    asyncio.run(scenario())


# --- B5: redis-py's 5 s default read timeout cuts bullmq's blocking waits short ------------------


async def _runs_within(url: str, fix: Fix | None, delay_ms: int, within_s: float) -> bool:
    """Does a job delayed by `delay_ms` run within `within_s` of being added to an idle worker?"""
    ran = asyncio.Event()

    async def record(_job: Any, _token: str) -> None:
        ran.set()

    queue = await _fresh_queue(url, "b5")
    worker = _worker(url, "b5", record)
    await _apply(fix, worker)
    run = asyncio.ensure_future(worker.run())
    await asyncio.sleep(0.3)
    await queue.add("later", {}, {"delay": delay_ms})
    try:
        await asyncio.wait_for(ran.wait(), within_s)
    except TimeoutError:
        return False
    finally:
        await worker.close()
        await run
        await queue.close()
    return True


def test_b5_bare_job_delayed_over_5s_does_not_run_on_time(redis_server: RedisServer):
    assert not asyncio.run(_runs_within(redis_server.url, None, 5600, 9.0)), "B5 seems fixed upstream"


def test_b5_blocking_read_timeout_runs_it_on_time(redis_server: RedisServer):
    assert asyncio.run(_runs_within(redis_server.url, adapter.use_blocking_read_timeout, 5600, 7.5))
