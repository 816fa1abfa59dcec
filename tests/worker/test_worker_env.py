"""The spec's worker settings reach the worker through the contract: max_stalled_count (item 6, with
its derived default), max_job_seconds (item 1) and the key prefix (item 16), and the worker derives
the same defaults when a variable is unset."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from killsafe import contract
from killsafe.app_env import web_env, worker_env
from killsafe.spec import WorkloadSpec
from killsafe_worker.config import load_worker_settings


def workload(**worker: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": "emails",
            "image": "ghcr.io/acme/emails:1.4.2",
            "redis": {"key_prefix": "acme"},
            "web": {},
            "worker": {"queues": ["emails"], "max_job_seconds": 90, **worker},
        }
    )


@pytest.mark.parametrize(
    ("worker", "expected"),
    [({}, 2), ({"concurrency_per_queue": 10}, 3), ({"queues": ["a", "b"]}, 3), ({"max_stalled_count": 0}, 0)],
)
def test_max_stalled_count_default_is_derived_and_reaches_the_worker(worker: dict[str, Any], expected: int) -> None:
    spec = workload(**worker)
    env = worker_env(spec, "/var/run/secrets/killsafe/url")
    assert env[contract.ENV_MAX_STALLED_COUNT] == str(expected)
    assert env[contract.ENV_MAX_JOB_SECONDS] == "90"
    assert env[contract.ENV_KEY_PREFIX] == "acme"
    settings = load_worker_settings({key: value for key, value in env.items() if key != contract.ENV_REDIS_URL_FILE})
    assert settings.max_stalled_count == expected
    assert settings.max_job_seconds == 90 and settings.key_prefix == "acme"
    if "max_stalled_count" not in worker:  # the worker alone derives the same default
        unset = {key: value for key, value in env.items() if key not in (contract.ENV_MAX_STALLED_COUNT,)}
        unset.pop(contract.ENV_REDIS_URL_FILE)
        assert load_worker_settings(unset).max_stalled_count == expected


def test_the_web_app_gets_the_key_prefix_too() -> None:
    assert web_env(workload(), None)[contract.ENV_KEY_PREFIX] == "acme"


@pytest.mark.parametrize("bad", [-1, 101, "three"])
def test_max_stalled_count_is_bounded(bad: object) -> None:
    with pytest.raises(ValidationError):
        workload(max_stalled_count=bad)
