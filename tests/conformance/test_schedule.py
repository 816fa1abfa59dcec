"""The chaos schedule is a pure function of the seed (no processes needed)."""

from __future__ import annotations

import itertools

from tests.conformance.schedule import (
    DEFAULT_SEED,
    KINDS,
    MIN_GAP_SECONDS,
    OOM_SLOT,
    SEED_ENV,
    WINDOW_SECONDS,
    WORKER_SLOTS,
    chaos_schedule,
    counts,
    seed_from_env,
)


def test_same_seed_same_schedule() -> None:
    assert chaos_schedule(1234) == chaos_schedule(1234)
    assert chaos_schedule(DEFAULT_SEED) == chaos_schedule(DEFAULT_SEED)


def test_different_seeds_differ() -> None:
    assert chaos_schedule(1) != chaos_schedule(2)


def test_every_seed_plans_the_minimum_chaos() -> None:
    for seed in range(200):
        events = chaos_schedule(seed)
        assert counts(events) == KINDS
        assert counts(events)["redis_restart"] >= 2
        times = [event.at for event in events]
        assert times == sorted(times)
        assert all(later - earlier >= MIN_GAP_SECONDS - 1e-6 for earlier, later in itertools.pairwise(times))
        assert times[0] > 0 and times[-1] < WINDOW_SECONDS
        for event in events:
            if event.kind in ("sigkill", "sigterm", "sigstop"):
                assert event.slot is not None and 0 <= event.slot < WORKER_SLOTS
            if event.kind == "sigstop":
                assert event.slot != OOM_SLOT and float(event.detail) > 2.0  # past the 2 s lock
            if event.kind == "oom_kill":
                assert event.slot == OOM_SLOT
        modes = [event.detail for event in events if event.kind == "redis_restart"]
        assert sorted(modes) == ["crash", "shutdown"]


def test_seed_comes_from_the_environment_or_a_fixed_default() -> None:
    assert seed_from_env({}) == DEFAULT_SEED
    assert seed_from_env({SEED_ENV: "77"}) == 77
