"""With 100,000 failed jobs every page reads a bounded, size-independent amount of Redis.

Redis counts every command it runs (INFO commandstats, commands inside scripts included) and every
key lookup (keyspace hits + misses): each page is requested once through the real dashboard process
with the counters reset just before, and the test asserts what was read. Times are printed, not
asserted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from killsafe_worker.dashboard.reads import SEARCH_SCAN_LIMIT
from tests.dashboard.conftest import QUEUE, DashboardFactory, DashboardProcess, write_failed_jobs

FAILED_JOBS = 100_000
PER_PAGE = 50
WIDE_READS = ("hgetall", "zrange", "lrange", "scan", "keys", "hscan", "zscan", "sscan", "smembers", "hkeys", "hvals")
"""Commands that read a whole structure; none may touch the failed set or the job hashes in bulk."""


@dataclass(frozen=True)
class Reads:
    status: int
    body: str
    calls: dict[str, int]
    keys_read: int
    seconds: float

    def calls_of(self, command: str) -> int:
        return self.calls.get(command, 0)


@dataclass
class Big:
    dashboard: DashboardProcess
    rds: redis.Redis

    def measure(self, path: str) -> Reads:
        self.rds.config_resetstat()
        started = time.perf_counter()
        answer = self.dashboard.get(path)
        seconds = time.perf_counter() - started
        stats = self.rds.info("commandstats")
        calls = {name.removeprefix("cmdstat_").lower(): int(v["calls"]) for name, v in stats.items()}
        for own in ("config|resetstat", "config", "info", "hello", "client|setinfo", "select"):
            calls.pop(own, None)  # the test's own commands, and a new connection's handshake
        keyspace = self.rds.info("stats")
        reads = Reads(
            answer.status,
            answer.body,
            calls,
            int(keyspace["keyspace_hits"]) + int(keyspace["keyspace_misses"]),
            seconds,
        )
        print(
            f"{path}: HTTP {reads.status} in {seconds * 1000:.0f} ms, {sum(calls.values())} commands {calls}, "
            f"{reads.keys_read} key lookups"
        )
        return reads


FILL_LUA = r"""
local prefix, first, count, rare_every, rare_at, finished_on = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local names = {'send_email', 'resize_image', 'sync_crm'}
for n = first, first + count - 1 do
  local id = string.format('job-%06d', n)
  local name = names[(n % 3) + 1]
  if n % rare_every == rare_at then name = 'rare_report' end
  local at = finished_on + n
  redis.call('HSET', prefix .. id, 'name', name, 'data', '{"n": ' .. n .. '}', 'opts', '{"attempts": 1}',
    'timestamp', at - 50, 'delay', 0, 'priority', 0, 'processedOn', at - 40, 'finishedOn', at, 'atm', 1, 'ats', 1,
    'failedReason', 'RuntimeError: ' .. name .. ' failed (job ' .. id .. ')',
    'stacktrace', '["Traceback (most recent call last):\\nRuntimeError: ' .. name .. ' failed"]')
  redis.call('ZADD', prefix .. 'failed', at, id)
end
return count
"""
"""The same fields as conftest.write_failed_jobs, written inside Redis (in batches, so that no single
script call keeps Redis busy for long)."""
BATCH = 5000


@pytest.fixture(scope="module")
def big(rds: redis.Redis, dashboards: DashboardFactory) -> Iterator[Big]:
    started = time.perf_counter()
    write_failed_jobs(rds, [("job-sample", "send_email", {"n": -1})])  # the Python writer, for comparison
    sample = rds.hgetall(f"bull:{QUEUE}:job-sample")
    rds.delete(f"bull:{QUEUE}:job-sample", f"bull:{QUEUE}:failed")
    fill = rds.register_script(FILL_LUA)
    written = sum(
        int(fill(keys=[f"bull:{QUEUE}:"], args=[first, BATCH, 10_000, 1234, 1_800_000_000_000]))
        for first in range(0, FAILED_JOBS, BATCH)
    )
    print(f"wrote {written} failed jobs in {time.perf_counter() - started:.1f} s")
    assert rds.zcard(f"bull:{QUEUE}:failed") == FAILED_JOBS
    assert set(rds.hgetall(f"bull:{QUEUE}:job-000000")) == set(sample), "both writers store the same fields"
    yield Big(dashboards.start(), rds)


def _ids(body: str) -> list[str]:
    return re.findall(r'/jobs/(job-\d{6})">', body)


def test_a_page_of_failed_jobs_reads_only_that_page(big: Big) -> None:
    for page, first, last in ((0, 99_999, 99_950), (1000, 49_999, 49_950), (1999, 49, 0)):
        reads = big.measure(f"/queues/{QUEUE}/failed?page={page}")
        assert reads.status == 200
        assert "100,000 failed jobs, newest first" in reads.body
        ids = _ids(reads.body)
        assert ids == [f"job-{n:06d}" for n in range(first, last - 1, -1)], "newest first, exactly one page"
        assert reads.calls_of("zcard") == 1 and reads.calls_of("zrevrange") == 1
        assert reads.calls_of("hmget") == PER_PAGE, "a few fields of each job on the page, nothing else"
        assert not [command for command in WIDE_READS if reads.calls_of(command)]
        assert sum(reads.calls.values()) == PER_PAGE + 2
        assert reads.keys_read <= PER_PAGE + 2


def test_a_search_reads_a_bounded_window_and_offers_to_go_on(big: Big) -> None:
    exact = big.measure(f"/queues/{QUEUE}/failed?q=job-004242")
    assert exact.status == 200 and _ids(exact.body)[0] == "job-004242", "an exact id is found wherever it is"
    assert exact.calls_of("zscore") == 1

    by_name = big.measure(f"/queues/{QUEUE}/failed?q=rare_report")
    assert by_name.status == 200
    assert _ids(by_name.body) == [], "the newest 5,000 failed jobs hold no rare_report"
    assert by_name.calls_of("zrevrange") == 1 and by_name.calls_of("hget") == SEARCH_SCAN_LIMIT
    assert f"cursor={SEARCH_SCAN_LIMIT}" in by_name.body, "the page offers to search older jobs"
    assert not [command for command in WIDE_READS if by_name.calls_of(command)]
    assert by_name.keys_read <= SEARCH_SCAN_LIMIT + PER_PAGE + 2

    further = big.measure(f"/queues/{QUEUE}/failed?q=rare_report&cursor=5000")
    assert _ids(further.body) == ["job-091234"]
    assert further.calls_of("hget") == SEARCH_SCAN_LIMIT


def test_a_job_page_and_the_overview_do_not_grow_with_the_failed_set(big: Big) -> None:
    job = big.measure(f"/queues/{QUEUE}/jobs/job-012345")
    assert job.status == 200 and "send_email failed (job job-012345)" in job.body
    assert job.calls_of("hgetall") == 1, "one job hash"
    assert sum(job.calls.values()) <= 12
    overview = big.measure("/")
    assert overview.status == 200 and 'data-state="failed">100,000<' in overview.body
    assert not [command for command in ("zrevrange", "hgetall", "hget", "scan", "keys") if overview.calls_of(command)]
    assert overview.calls_of("hmget") == 3, "queue meta + two metrics hashes, never a job"
    assert sum(overview.calls.values()) <= 20
    preview = big.measure(f"/queues/{QUEUE}/retry-selection?q=resize_image")
    assert preview.status == 200 and "Dry run" in preview.body
    assert preview.calls_of("hmget") <= 100 and not preview.calls_of("hgetall")
    assert preview.calls_of("hget") == SEARCH_SCAN_LIMIT
