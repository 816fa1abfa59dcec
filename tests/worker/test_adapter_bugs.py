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
from dataclasses import dataclass
from typing import Any

import pytest
from bullmq import Queue, Worker
from redis.asyncio import Redis

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


def _closable_worker(url: str, queue: str, processor: Callable[..., Awaitable[Any]], **opts: Any) -> Worker:
    """A worker whose close() always ends: with B5 fixed. On the bare library, a BZPOPMIN that starts
    just as close() begins (after it cancelled the wait it knew of) is re-sent forever. B5's fix is
    independent of B1, B2, B4 and O1, so their bare-library variants use it too; only the B3 and B5
    tests (whose behaviour it touches) build truly bare workers."""
    worker = _worker(url, queue, processor, **opts)
    adapter.use_blocking_read_timeout(worker)
    return worker


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
    first, second = _closable_worker(url, "b1", slow, **opts), _closable_worker(url, "b1", slow, **opts)
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


def test_b1_bare_close_lets_running_jobs_be_run_twice(redis_server: RedisServer) -> None:
    starts = asyncio.run(_runs_per_job_after_close(redis_server.url, None))
    assert max(starts.values()) >= 2, f"B1 seems fixed upstream: {starts}"


def test_b1_deferred_lock_close_runs_each_job_once(redis_server: RedisServer) -> None:
    starts = asyncio.run(_runs_per_job_after_close(redis_server.url, adapter.defer_lock_manager_close))
    assert list(starts.values()) == [1], starts


# --- B2: delayed jobs ~1 s late (blocking waits rounded up to whole seconds) ---------------------


async def _delay_lateness_ms(url: str, fix: Fix | None, delay_ms: int = 1100, rounds: int = 3) -> float:
    """Median lateness of delayed jobs picked up by an idle worker."""
    ran: asyncio.Queue[float] = asyncio.Queue()

    async def record(_job: Any, _token: str) -> None:
        ran.put_nowait(time.time())

    queue = await _fresh_queue(url, "b2")
    worker = _closable_worker(url, "b2", record)
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


def test_b2_bare_delayed_jobs_run_about_a_second_late(redis_server: RedisServer) -> None:
    late = asyncio.run(_delay_lateness_ms(redis_server.url, None))
    assert late > 500, f"B2 seems fixed upstream: delayed jobs only {late:.0f} ms late"


def test_b2_exact_block_timeouts_run_delayed_jobs_on_time(redis_server: RedisServer) -> None:
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


def test_b3_bare_worker_resumes_seconds_after_redis_returns(redis_server: RedisServer) -> None:
    resumed = asyncio.run(_resume_after_restart(redis_server, None))
    assert resumed > 1.5, f"B3 seems fixed upstream: resumed {resumed:.2f}s after Redis returned"


def test_b3_fast_reconnect_resumes_at_once(redis_server: RedisServer) -> None:
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
    worker = _closable_worker(url, "b4", failing)
    worker.on("failed", buggy_listener)
    worker.on("error", buggy_listener)
    run = asyncio.ensure_future(adapter.run_supervised(worker) if supervised else worker.run())
    await queue.add("fails", {})
    await asyncio.wait({run}, timeout=10)
    return run, worker, queue


def test_b4_bare_run_loop_stops_silently(redis_server: RedisServer) -> None:
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


def test_b4_supervised_run_raises_instead(redis_server: RedisServer) -> None:
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


def test_b5_bare_job_delayed_over_5s_does_not_run_on_time(redis_server: RedisServer) -> None:
    assert not asyncio.run(_runs_within(redis_server.url, None, 5600, 9.0)), "B5 seems fixed upstream"


def test_b5_blocking_read_timeout_runs_it_on_time(redis_server: RedisServer) -> None:
    assert asyncio.run(_runs_within(redis_server.url, adapter.use_blocking_read_timeout, 5600, 7.5))


# --- O1 (performance): two script calls per job where Node BullMQ makes one -----------------------


@dataclass
class _Consumed:
    """What one worker did with a pre-filled queue of no-op jobs."""

    scripts_per_job: float
    completed: Counter[str]
    active: Counter[str]
    most_at_once: int
    untracked_runs: list[str]
    lock_gaps: int
    """How often the lock manager was left tracking nothing (B1's deferred close would close it)."""


async def _consume(url: str, fix: Fix | None, concurrency: int, jobs: int = 200) -> _Consumed:
    """Run `jobs` no-op jobs on one worker; count Lua script calls (EVALSHA/EVAL) from INFO commandstats."""
    completed: Counter[str] = Counter()
    active: Counter[str] = Counter()
    running = most_at_once = 0
    untracked_runs: list[str] = []
    queue = await _fresh_queue(url, "o1")
    await queue.addBulk([{"name": "noop", "data": {"n": n}} for n in range(jobs)])

    async def noop(job: Any, token: str) -> None:
        nonlocal running, most_at_once
        if job.id not in worker.lockManager.tracked_jobs or (job, token) not in worker.jobs:
            untracked_runs.append(job.id)
        running += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(0.005)  # long enough for the other slots' jobs to run meanwhile
        running -= 1

    worker = _closable_worker(url, "o1", noop, concurrency=concurrency)
    await _apply(fix, worker)
    lock_gaps = 0
    untrack = worker.lockManager.untrack_job

    def untrack_and_count_gaps(job_id: str) -> None:
        nonlocal lock_gaps
        untrack(job_id)
        lock_gaps += not worker.lockManager.tracked_jobs

    worker.lockManager.untrack_job = untrack_and_count_gaps
    worker.on("completed", lambda job, _result: completed.update([job.id]))
    worker.on("active", lambda job, _prev: active.update([job.id]))
    stats = Redis.from_url(url)
    await stats.config_resetstat()
    run = asyncio.ensure_future(worker.run())
    deadline = time.monotonic() + 60
    while completed.total() < jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    commandstats = await stats.info("commandstats")
    await worker.close()
    await run
    await stats.aclose()
    await queue.close()
    calls = sum(commandstats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))
    return _Consumed(calls / jobs, completed, active, most_at_once, untracked_runs, lock_gaps)


def test_o1_bare_worker_makes_two_script_calls_per_job(redis_server: RedisServer) -> None:
    consumed = asyncio.run(_consume(redis_server.url, None, concurrency=1))
    assert len(consumed.completed) == 200
    assert consumed.scripts_per_job >= 1.8, f"O1 seems done upstream: {consumed.scripts_per_job:.2f} calls/job"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_o1_fetch_next_one_call_per_job_same_slots_and_events(redis_server: RedisServer, concurrency: int) -> None:
    consumed = asyncio.run(_consume(redis_server.url, adapter.fetch_next_on_complete, concurrency))
    assert consumed.scripts_per_job <= 1.2, f"{consumed.scripts_per_job:.2f} script calls/job"
    assert len(consumed.completed) == 200 and set(consumed.completed.values()) == {1}, "completed once per job"
    assert len(consumed.active) == 200 and set(consumed.active.values()) == {1}, "active once per job"
    assert consumed.untracked_runs == [], "a job ran without its lock being renewed"
    assert consumed.lock_gaps <= 2 * concurrency, f"{consumed.lock_gaps} moments without a tracked lock"
    assert min(concurrency, 2) <= consumed.most_at_once <= concurrency, "not one job per slot"


@pytest.mark.parametrize("stop", ["close", "pause"])
def test_o1_fetch_next_claims_nothing_once_closing_or_paused(redis_server: RedisServer, stop: str) -> None:
    """close() (SIGTERM) or pause() while a job runs: its completion must not claim the next job."""

    async def scenario() -> None:
        queue = await _fresh_queue(redis_server.url, "o1-stop")
        first = await queue.add("first", {})
        second = await queue.add("second", {})
        ran: list[str] = []

        async def stops_the_worker_meanwhile(job: Any, _token: str) -> None:
            ran.append(job.id)
            if job.id == first.id:
                stopping = worker.close() if stop == "close" else worker.pause(do_not_wait_active=True)
                background.append(asyncio.ensure_future(stopping))
                await asyncio.sleep(0.3)

        background: list[asyncio.Future[Any]] = []
        worker = _closable_worker(redis_server.url, "o1-stop", stops_the_worker_meanwhile)
        adapter.fetch_next_on_complete(worker)
        run = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + 10
        while await queue.getJobState(first.id) != "completed" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert await queue.getJobState(second.id) == "waiting", "claimed after close()/pause()"
        assert ran == [first.id]
        if stop == "pause":
            worker.resume()
            while await queue.getJobState(second.id) != "completed" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert ran == [first.id, second.id]
            await worker.close()
        await asyncio.gather(run, *background)
        await queue.close()

    asyncio.run(scenario())


def test_o1_fetch_next_counts_failures_and_successes_once_each(redis_server: RedisServer) -> None:
    """Failing jobs take the library's path (no claim); successes between them keep claiming."""

    async def scenario() -> tuple[Counter[str], Counter[str], int]:
        queue = await _fresh_queue(redis_server.url, "o1-fail")
        await queue.addBulk([{"name": "fails" if n % 3 == 0 else "works", "data": {}} for n in range(30)])
        completed: Counter[str] = Counter()
        failed: Counter[str] = Counter()

        async def fails_some(job: Any, _token: str) -> None:
            if job.name == "fails":
                raise ValueError("meant to fail")

        worker = _closable_worker(redis_server.url, "o1-fail", fails_some)
        adapter.fetch_next_on_complete(worker)
        worker.on("completed", lambda job, _result: completed.update([job.id]))
        worker.on("failed", lambda job, _error: failed.update([job.id]))
        run = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + 30
        while completed.total() + failed.total() < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        counts = await queue.getJobCounts("completed", "failed")
        await worker.close()
        await run
        await queue.close()
        return completed, failed, counts["completed"] + 100 * counts["failed"]

    completed, failed, stored = asyncio.run(scenario())
    assert (len(completed), len(failed)) == (20, 10)
    assert set(completed.values()) == set(failed.values()) == {1}
    assert not set(completed) & set(failed)
    assert stored == 20 + 100 * 10


def test_o1_fetch_next_still_runs_delayed_jobs_on_time(redis_server: RedisServer) -> None:
    """The claim's "next delayed job at" answer drives the wait (with B2's exact timeouts)."""

    def with_b2_and_b5(worker: Worker) -> Awaitable[None]:
        adapter.fetch_next_on_complete(worker)
        adapter.use_blocking_read_timeout(worker)
        return adapter.use_exact_block_timeouts(worker)

    late = asyncio.run(_delay_lateness_ms(redis_server.url, with_b2_and_b5))
    assert late < 400, f"delayed jobs {late:.0f} ms late"
