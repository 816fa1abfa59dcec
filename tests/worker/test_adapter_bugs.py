"""Regression tests for every bullmq workaround in killsafe_worker.adapter, against a real Redis.

Each bug runs twice: on the bare library, asserting the bug is still there (if one of these fails
after a bullmq or redis-py upgrade, the bug is fixed upstream: delete the workaround and this
variant), and with the workaround, asserting it is gone.
"""

from __future__ import annotations

import asyncio
import json
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


# --- B6: concurrent jobs share lock tokens (a late-binding closure in run()) ---------------------


async def _distinct_tokens_in_flight(url: str, fix: Fix | None, jobs: int = 20) -> tuple[int, int]:
    """(jobs seen in flight at once, distinct tokens among them) with concurrency = jobs."""
    tokens: dict[str, str] = {}
    all_started = asyncio.Event()

    async def hold(job: Any, token: str) -> None:
        tokens[job.id] = token
        if len(tokens) == jobs:
            all_started.set()
        await all_started.wait()

    queue = await _fresh_queue(url, "b6")
    await queue.addBulk([{"name": "hold", "data": {"n": n}} for n in range(jobs)])
    worker = _closable_worker(url, "b6", hold, concurrency=jobs)
    await _apply(fix, worker)
    run = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(all_started.wait(), 30)
    await worker.close()
    await run
    await queue.close()
    return len(tokens), len(set(tokens.values()))


def test_b6_bare_concurrent_jobs_share_tokens(redis_server: RedisServer) -> None:
    jobs, tokens = asyncio.run(_distinct_tokens_in_flight(redis_server.url, None))
    assert jobs == 20
    assert tokens < jobs, f"B6 seems fixed upstream: {tokens} distinct tokens for {jobs} jobs"


def test_b6_own_token_per_job_gives_each_job_its_token(redis_server: RedisServer) -> None:
    assert asyncio.run(_distinct_tokens_in_flight(redis_server.url, adapter.own_token_per_job)) == (20, 20)


# --- B7: global rate limits (Node's setGlobalRateLimit, Bull Board) are ignored --------------------


async def _start_times_under_rate_limit(url: str, fix: Fix | None, jobs: int = 6, within_s: float = 4.5) -> list[float]:
    """Seconds after the first start at which each job started, with the queue limited to 2 jobs/s
    (the meta fields Node's Queue.setGlobalRateLimit(2, 1000) writes) and `within_s` to run them."""
    starts: list[float] = []

    async def record(_job: Any, _token: str) -> None:
        starts.append(time.monotonic())

    queue = await _fresh_queue(url, "b7")
    await queue.client.hset(queue.keys["meta"], mapping={"max": 2, "duration": 1000})
    await queue.addBulk([{"name": "limited", "data": {"n": n}} for n in range(jobs)])
    worker = _closable_worker(url, "b7", record, concurrency=4)
    await _apply(fix, worker)
    await adapter.use_exact_block_timeouts(worker)
    run = asyncio.ensure_future(worker.run())
    deadline = time.monotonic() + within_s
    while len(starts) < jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await worker.close()
    await run
    await queue.close()
    return [round(at - starts[0], 2) for at in starts]


def test_b7_bare_worker_ignores_the_global_rate_limit(redis_server: RedisServer) -> None:
    starts = asyncio.run(_start_times_under_rate_limit(redis_server.url, None))
    assert len(starts) < 6, f"B7 seems fixed upstream: all jobs started at {starts}"


def test_b7_honour_rate_limits_starts_two_jobs_a_second(redis_server: RedisServer) -> None:
    starts = asyncio.run(_start_times_under_rate_limit(redis_server.url, adapter.honour_rate_limits))
    print("start times under a 2 jobs/s global rate limit:", starts)
    assert len(starts) == 6, f"only {len(starts)} of 6 jobs started within 4.5 s: {starts}"
    assert all(later - earlier >= 0.8 for earlier, later in zip(starts, starts[2:], strict=False)), (
        f"more than 2 jobs started within a second: {starts}"
    )


# --- B8: connections invisible to Node's getWorkers(); processedBy never set ----------------------


async def _names_and_processed_by(url: str, fix: Fix | None) -> tuple[list[str], str | None]:
    """(connection names Node's Queue.getWorkers() would list, the completed job's processedBy)."""
    done = asyncio.Event()

    async def work(_job: Any, _token: str) -> None:
        done.set()

    queue = await _fresh_queue(url, "b8")
    worker = _closable_worker(url, "b8", work, name="host-1:42")
    await _apply(fix, worker)
    run = asyncio.ensure_future(worker.run())
    job = await queue.add("work", {})
    await asyncio.wait_for(done.wait(), 10)
    while await queue.getJobState(job.id) != "completed":
        await asyncio.sleep(0.02)
    node_name = adapter.node_client_name("bull", "b8", None)  # what Node's Queue.clientName() returns
    clients = await queue.client.client_list()
    listed = [c["name"] for c in clients if c["name"] == node_name or c["name"].startswith(node_name + ":w:")]
    processed_by = await queue.client.hget(queue.toKey(job.id), "pb")
    await worker.close()
    await run
    await queue.close()
    return listed, processed_by


def test_b8_bare_worker_is_invisible_to_node_and_sets_no_processed_by(redis_server: RedisServer) -> None:
    listed, processed_by = asyncio.run(_names_and_processed_by(redis_server.url, None))
    assert listed == [] and processed_by is None, f"B8 seems fixed upstream: {listed}, {processed_by!r}"


def test_b8_node_names_and_processed_by(redis_server: RedisServer) -> None:
    def both(worker: Worker) -> None:
        adapter.name_connections_like_node(worker)
        adapter.record_processed_by(worker)

    listed, processed_by = asyncio.run(_names_and_processed_by(redis_server.url, both))
    assert listed == [adapter.node_client_name("bull", "b8", "host-1:42")] * 2  # main + blocking connection
    assert processed_by == "host-1:42"


# --- B9: a job failed for stalling gets the stack trace "NoneType: None" ------------------------------


async def _failed_for_stalling(url: str, fix: Fix | None) -> dict[str, str]:
    """A job claimed by a worker that then vanishes (its lock expires) is failed by another worker
    whose maxStalledCount is 0; returns the failed job's hash."""
    queue = await _fresh_queue(url, "b9")
    job = await queue.add("abandoned", {})
    vanished = _worker(url, "b9", None, lockDuration=1000)
    assert (await vanished.getNextJob("vanished:1")).id == job.id  # claimed, then never processed
    await vanished.close(force=True)

    async def never_called(_job: Any, _token: str) -> None:
        raise AssertionError("a job failed for stalling must not run")

    survivor = _closable_worker(url, "b9", never_called, lockDuration=1000, stalledInterval=300, maxStalledCount=0)
    await _apply(fix, survivor)
    run = asyncio.ensure_future(survivor.run())
    deadline = time.monotonic() + 20
    while await queue.getJobState(job.id) != "failed" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    raw = await queue.client.hgetall(queue.toKey(job.id))
    await survivor.close()
    await run
    await queue.close()
    return {str(k): str(v) for k, v in raw.items()}


def test_b9_bare_stalled_failure_has_a_nonetype_trace(redis_server: RedisServer) -> None:
    failed = asyncio.run(_failed_for_stalling(redis_server.url, None))
    assert failed["failedReason"] == "job stalled more than allowable limit"
    assert json.loads(failed["stacktrace"]) == ["NoneType: None\n"], "B9 seems fixed upstream"


def test_b9_stalled_failure_says_why(redis_server: RedisServer) -> None:
    failed = asyncio.run(_failed_for_stalling(redis_server.url, adapter.fetch_next_on_complete))
    assert failed["failedReason"].startswith(
        "job stalled more than allowable limit: the worker running it lost its lock"
    )
    assert "max_stalled_count (0)" in failed["failedReason"]
    assert json.loads(failed["stacktrace"]) == [failed["failedReason"]]


# --- B10: a job hash that cannot be parsed stays active forever ---------------------------------------

FOREIGN_JOBS = {
    "bad-data": {"data": "not json {", "opts": "{}"},
    "bad-opts": {"data": "{}", "opts": "[1, 2"},
    "bad-atm": {"data": "{}", "opts": "{}", "atm": "three"},
}
"""Job hashes a producer that does not speak BullMQ could write (field: what is wrong with it)."""


async def _unparsable_outcome(url: str, fix: Fix | None) -> tuple[dict[str, str], Counter[str]]:
    """Write FOREIGN_JOBS straight into Redis and let a worker run ~4 s; (state per job, failed events)."""
    queue = await _fresh_queue(url, "b10")
    client = queue.client
    for job_id, fields in FOREIGN_JOBS.items():
        await client.hset(
            queue.toKey(job_id), mapping={"name": "foreign", "timestamp": int(time.time() * 1000), **fields}
        )
        await client.lpush(queue.keys["wait"], job_id)
    await client.zadd(queue.keys["marker"], {"0": 0})

    async def never_called(_job: Any, _token: str) -> None:
        raise AssertionError("an unparsable job must not run")

    failed: Counter[str] = Counter()
    worker = _closable_worker(url, "b10", never_called, lockDuration=1000, stalledInterval=300, maxStalledCount=5)
    await _apply(fix, worker)
    worker.on("failed", lambda job, _err: failed.update([job.id]))
    worker.on("error", lambda *_: None)
    run = asyncio.ensure_future(worker.run())
    await asyncio.sleep(4)
    states = {job_id: str(await queue.getJobState(job_id)) for job_id in FOREIGN_JOBS}
    await worker.close()
    await run
    await queue.close()
    return states, failed


def test_b10_bare_unparsable_jobs_are_never_failed(redis_server: RedisServer) -> None:
    states, failed = asyncio.run(_unparsable_outcome(redis_server.url, None))
    assert "failed" not in states.values() and not failed, f"B10 seems fixed upstream: {states}"


def test_b10_unparsable_jobs_fail_once_with_what_could_not_be_parsed(redis_server: RedisServer) -> None:
    states, failed = asyncio.run(_unparsable_outcome(redis_server.url, adapter.fail_unparsable_jobs))
    assert states == dict.fromkeys(FOREIGN_JOBS, "failed")
    assert failed == Counter(dict.fromkeys(FOREIGN_JOBS, 1)), "each job is failed exactly once"
    rds = Redis.from_url(redis_server.url, decode_responses=True)

    async def reasons() -> dict[str, str]:
        try:
            return {job_id: await rds.hget(f"bull:b10:{job_id}", "failedReason") for job_id in FOREIGN_JOBS}
        finally:
            await rds.aclose()

    got = asyncio.run(reasons())
    assert "data is not JSON ('not json {')" in got["bad-data"]
    assert "opts is not JSON ('[1, 2')" in got["bad-opts"]
    assert "atm is not an integer ('three')" in got["bad-atm"]
