"""The job mix (seeded, like the chaos) and a producer that keeps enqueueing through Redis restarts."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bullmq import Queue

QUEUE = "jobs"
HOG_QUEUE = "hog"
MIX: dict[str, int] = {
    "short": 1100,
    "slow": 150,
    "cpu": 100,
    "delayed": 250,
    "prioritized": 200,
    "flaky": 150,
    "doomed": 50,
}
"""2,000 jobs. Every job id is explicit (`<name>-<n>`), so a batch re-sent after a lost reply adds nothing."""
ATTEMPTS = 3
"""Every job: so an attempt failed by an infrastructure hiccup is retried, never lost."""
HOG_MIB = 512
HOG_JOB_ID = "hog-0"


@dataclass(frozen=True)
class PlannedJob:
    job_id: str
    name: str
    data: dict[str, Any]
    opts: dict[str, Any] = field(default_factory=dict)

    @property
    def expected(self) -> str:
        """Its end state: doomed jobs fail for good, everything else completes."""
        return "failed" if self.name == "doomed" else "completed"


def plan_jobs(seed: int) -> list[PlannedJob]:
    """The 2,000 jobs of one run, shuffled (the order they are enqueued in)."""
    rng = random.Random(seed ^ 0x5EED)
    backoff = {"type": "exponential", "delay": 100}
    jobs: list[PlannedJob] = []
    for name, count in MIX.items():
        for n in range(count):
            opts: dict[str, Any] = {"jobId": f"{name}-{n}", "attempts": ATTEMPTS, "backoff": backoff}
            data: dict[str, Any] = {"seconds": round(rng.uniform(0.005, 0.05), 3)}
            if name == "slow":
                data["seconds"] = round(rng.uniform(0.5, 3.0), 2)
            elif name == "cpu":
                data["seconds"] = round(rng.uniform(0.05, 0.25), 3)
            elif name == "delayed":
                opts["delay"] = rng.randrange(500, 30_000)
            elif name == "prioritized":
                opts["priority"] = rng.randrange(1, 20)
            elif name == "flaky":
                data["fail_times"] = rng.randrange(1, ATTEMPTS)
            elif name == "doomed":
                opts["backoff"] = {"type": "fixed", "delay": 200}
            jobs.append(PlannedJob(f"{name}-{n}", name, data, opts))
    rng.shuffle(jobs)
    return jobs


def hog_job() -> PlannedJob:
    return PlannedJob(HOG_JOB_ID, "hog", {"mib": HOG_MIB}, {"jobId": HOG_JOB_ID, "attempts": ATTEMPTS})


async def add_batch(url: str, jobs: list[PlannedJob], queue: str = QUEUE, timeout: float = 60.0) -> int:
    """Add `jobs`, retrying through a Redis restart (ids are explicit, so a retry never duplicates).
    Returns how many tries it took."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        q = Queue(queue, {"connection": url})
        try:
            await asyncio.wait_for(
                q.addBulk([{"name": job.name, "data": job.data, "opts": job.opts} for job in jobs]), 10
            )
            return tries
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
        finally:
            with contextlib.suppress(Exception):  # a Redis that just went away; the retry reconnects
                await asyncio.wait_for(q.close(), 5)


def mix(jobs: list[PlannedJob]) -> Counter[str]:
    return Counter(job.name for job in jobs)
