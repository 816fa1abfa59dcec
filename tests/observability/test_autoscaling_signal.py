"""The autoscaling signal computed the way KEDA will, against a real Redis holding real BullMQ jobs.

KEDA's `redis` scaler asks Redis each trigger key's TYPE and counts it (LLEN for a list, ZCARD for a
sorted set, SCARD, HLEN; LLEN otherwise, which is 0 for a missing key); `scalingModifiers` then
evaluates the formula over the trigger names and the HPA divides by the target (AverageValue). Here
the triggers, the formula and the target are read from the rendered ScaledObject itself, and the
formula is evaluated as written. Jobs sit waiting, prioritized, delayed and active, with zero
workers and with several; a delayed job that comes due with zero workers keeps the signal at one
worker until a worker runs it.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from bullmq import Queue

from killsafe.kubernetes.build import build_manifests
from killsafe.observability.autoscaling import backlog, backlog_keys, desired_workers
from killsafe.spec import WorkloadSpec
from tests.conftest import RedisServer
from tests.kubernetes.k8s_specs import find, make_spec
from tests.worker.conftest import QUEUE, WorkerFactory, client, enqueue_many, wait_for

SPEC = make_spec(
    worker={
        "queues": [QUEUE],
        "concurrency_per_queue": 1,
        "autoscaling": {"min_replicas": 0, "max_replicas": 4, "target_backlog_per_worker": 2},
    }
)


def keda_count(r: redis.Redis, key: str) -> int:
    """What KEDA's redis scaler reads for one trigger's listName."""
    kind = r.type(key)
    if kind == "zset":
        return int(r.zcard(key))
    if kind == "set":
        return int(r.scard(key))
    if kind == "hash":
        return int(r.hlen(key))
    return int(r.llen(key))


_TERNARY = re.compile(r"\((\w+) > 0 \? 1 : 0\)")


def evaluate(formula: str, values: dict[str, int]) -> int:
    """The scalingModifiers formula (sums and `(x > 0 ? 1 : 0)`), evaluated as KEDA's expr would."""
    python = _TERNARY.sub(r"(1 if \1 > 0 else 0)", formula)
    assert re.fullmatch(r"[\w\s+()<>=]+", python.replace("1 if", "").replace("else", "")), python
    result = eval(python, {"__builtins__": {}}, dict(values))
    return int(result)


def scaled_object(spec: WorkloadSpec) -> dict[str, Any]:
    return find(build_manifests(spec), "ScaledObject", f"{spec.name}-worker")["spec"]


def keda_decision(spec: WorkloadSpec, r: redis.Redis) -> tuple[int, bool, int]:
    """(metric value, active, desired replicas) as KEDA and the HPA would compute them now."""
    so = scaled_object(spec)
    values = {t["name"]: keda_count(r, t["metadata"]["listName"]) for t in so["triggers"]}
    modifiers = so["advanced"]["scalingModifiers"]
    metric = evaluate(modifiers["formula"], values)
    active = metric > int(modifiers["activationTarget"])
    desired = math.ceil(metric / int(modifiers["target"])) if active else 0
    desired = max(so["minReplicaCount"], min(so["maxReplicaCount"], desired))
    # the target-neutral definition gives the same answer from the same counts
    counts = {key.key: keda_count(r, key.key) for key in backlog_keys(spec)}
    assert backlog(backlog_keys(spec), counts) == metric
    assert desired_workers(spec.worker, metric) == desired
    return metric, active, desired


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def test_zero_workers_waiting_prioritized_and_delayed(redis_url: str) -> None:
    r = client(redis_url)
    assert keda_decision(SPEC, r) == (0, False, 0), "an empty queue scales to zero"
    enqueue_many(
        redis_url,
        [("echo", {"i": i}, {}) for i in range(3)]
        + [("echo", {"i": i}, {"priority": 5}) for i in range(2)]
        + [("echo", {"i": i}, {"delay": 600_000}) for i in range(4)],
    )
    assert r.type(f"bull:{QUEUE}:wait") == "list" and r.type(f"bull:{QUEUE}:prioritized") == "zset"
    assert r.type(f"bull:{QUEUE}:delayed") == "zset"
    # 3 waiting + 2 prioritized + 0 active + (4 delayed -> 1) = 6; target 2 per worker -> 3 workers
    assert keda_decision(SPEC, r) == (6, True, 3)


def test_a_delayed_job_that_comes_due_with_zero_workers_gets_a_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    r = client(redis_server.url)
    [job_id] = enqueue_many(redis_server.url, [("echo", {"due": True}, {"delay": 1500})])
    assert keda_decision(SPEC, r) == (1, True, 1)
    time.sleep(2.0)  # due now, but nothing promotes it without a worker: it still sits in `delayed`
    assert r.zscore(f"bull:{QUEUE}:delayed", job_id) is not None
    assert keda_decision(SPEC, r) == (1, True, 1), "the signal keeps one worker until the job runs"
    workers = WorkerFactory(redis_server, tmp_path)  # what KEDA does at desired 1: start a worker
    try:
        workers.start()
        wait_for(lambda: r.zscore(f"bull:{QUEUE}:completed", job_id) is not None, 30, "the due job completed")
    finally:
        workers.cleanup()
    assert keda_decision(SPEC, r) == (0, False, 0), "and then the queue may scale to zero"


def test_several_workers_busy_jobs_count_so_scale_in_waits_for_the_work(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    r = client(redis_server.url)
    workers = WorkerFactory(redis_server, tmp_path)
    try:
        running = [workers.start() for _ in range(2)]
        enqueue_many(redis_server.url, [("sleep", {"seconds": 20}, {}) for _ in range(6)])
        wait_for(lambda: r.llen(f"bull:{QUEUE}:active") == 2, 30, "both workers busy")
        # 4 waiting + 2 active = 6 -> 3 workers at 2 per worker; the busy ones are part of the count
        assert keda_decision(SPEC, r) == (6, True, 3)
        # the workers' own gauges agree with what KEDA reads from Redis
        wait_for(
            lambda: running[0].metric("killsafe_queue_jobs", {"queue": QUEUE, "state": "active"}) == 2, 10, "gauge"
        )
        assert running[0].metric("killsafe_queue_jobs", {"queue": QUEUE, "state": "waiting"}) == 4
        r.delete(f"bull:{QUEUE}:wait")  # the waiting jobs gone: only the two running jobs remain
        assert keda_decision(SPEC, r) == (2, True, 1), "active jobs keep a worker: no scale to zero mid-job"
    finally:
        workers.cleanup()


def test_the_key_prefix_is_the_one_producers_use(redis_server: RedisServer) -> None:
    spec = make_spec(redis={"key_prefix": "shop"}, worker={"queues": [QUEUE], "autoscaling": {"max_replicas": 3}})
    r = client(redis_server.url)

    async def add() -> None:
        queue = Queue(QUEUE, {"connection": redis_server.url, "prefix": "shop"})
        try:
            await queue.add("echo", {}, {})
        finally:
            await queue.close()

    asyncio.run(add())
    assert r.llen(f"shop:{QUEUE}:wait") == 1
    assert keda_decision(spec, r) == (1, True, 1)
    assert keda_decision(SPEC, r) == (0, False, 0), "another prefix sees nothing"
