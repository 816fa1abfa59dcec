"""Pure parts of the dashboard: BullMQ's per-minute metrics summed over the last hour, the worker
connection names it recognises (Node's and Python bullmq's), CSRF tokens, and the retry budget."""

from __future__ import annotations

import base64

from killsafe_worker.dashboard.csrf import CsrfTokens
from killsafe_worker.dashboard.ratelimit import RetryBudget
from killsafe_worker.dashboard.reads import _worker_names, last_hour

MINUTE = 60_000
NOW = 1_000 * MINUTE + 30_000  # half way through minute 1000


def test_last_hour_counts_the_open_minute_and_the_59_before_it() -> None:
    # The last push happened in minute 990: 4 events since, in minute 990; points for 989, 988, ...
    meta = ["104", str(990 * MINUTE + 5_000), "100"]
    points = ["1"] * 100
    # Minutes 941..1000 are the last hour: 990 (4 events) + 989..941 (49 points of 1).
    assert last_hour(meta, points, NOW) == 4 + 49


def test_last_hour_ignores_what_is_older_and_survives_missing_metrics() -> None:
    assert last_hour([None, None, None], [], NOW) is None
    long_ago = ["50", str(800 * MINUTE), "40"]
    assert last_hour(long_ago, ["5"] * 10, NOW) == 0
    first_event_ever = ["1", str(NOW - 1_000), "0"]  # BullMQ's first HINCRBY + HSET prevTS, prevCount 0
    assert last_hour(first_event_ever, [], NOW) == 1
    assert last_hour(["3", str(NOW), "0"], ["garbage", "2"], NOW) == 3 + 0 + 2


def test_worker_names_of_both_bullmq_flavours_are_recognised() -> None:
    encoded = base64.b64encode(b"emails").decode()
    clients = [
        {"name": "bull:emails:w:vm-1:100"},  # Python bullmq 3.4.4
        {"name": f"bull:{encoded}:w:node-worker-7"},  # Node BullMQ (and what Bull Board lists)
        {"name": "bull:emails"},  # a Queue, not a worker
        {"name": "other:emails:w:x"},  # another prefix
        {"name": "bull:reports:w:vm-1:100"},
        {"name": ""},
    ]
    assert _worker_names(clients, "bull", ["emails", "reports"]) == {
        "vm-1:100": {"emails", "reports"},
        "node-worker-7": {"emails"},
    }


def test_csrf_tokens_are_bound_to_the_identity_and_expire() -> None:
    tokens = CsrfTokens(key=b"k" * 32, ttl_seconds=3600)
    token = tokens.issue("alice", now=1_000_000)
    assert tokens.valid(token, "alice", now=1_000_100)
    assert not tokens.valid(token, "bob", now=1_000_100)
    assert not tokens.valid(token, "alice", now=1_000_000 + 3601)
    assert not tokens.valid(token, "alice", now=1_000_000 - 3600), "issued in the future"
    assert not CsrfTokens(key=b"x" * 32).valid(token, "alice", now=1_000_100), "another process's token"
    for bad in (None, "", "abc", "1.2.3", "x.y", token + "0"):
        assert not tokens.valid(bad, "alice", now=1_000_100)


def test_the_retry_budget_refills_a_minute_after_each_retry() -> None:
    budget = RetryBudget(per_minute=3)
    budget.spend(2, now=0.0)
    budget.spend(1, now=30.0)
    assert budget.remaining(now=30.0) == 0 and budget.seconds_until_available(now=30.0) == 30.0
    assert budget.remaining(now=60.0) == 2
    assert budget.remaining(now=90.0) == 3
