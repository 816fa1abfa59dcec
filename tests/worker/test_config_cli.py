"""Settings validation and the command line: bad values fail fast with one line and exit 2; an
unreachable Redis or a dead processing loop exits non-zero instead of idling.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from killsafe_worker import contract
from killsafe_worker.config import (
    SettingsError,
    env_float,
    env_int,
    load_worker_settings,
    queues_from_env,
    redis_url_from_env,
)
from tests.conftest import REPO, RedisServer
from tests.worker.conftest import WORKER_BIN, WorkerFactory, capture_output, enqueue


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("KILLSAFE_", "REDIS_"))}
    result = subprocess.run(
        [str(WORKER_BIN), *args], env={**clean, **env}, capture_output=True, text=True, timeout=timeout
    )
    capture_output(f"killsafe-worker {' '.join(args)}", result.stdout, result.stderr)
    return result


def test_defaults():
    settings = load_worker_settings({})
    assert settings.redis_url == contract.DEFAULT_REDIS_URL
    assert settings.queues == (contract.DEFAULT_QUEUE,)
    assert settings.concurrency == contract.DEFAULT_CONCURRENCY
    assert settings.health_port == contract.HEALTH_PORT
    assert settings.shutdown_timeout_seconds == contract.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
    assert settings.lock_duration_ms == contract.DEFAULT_LOCK_DURATION_MS
    assert settings.stalled_interval_ms == contract.DEFAULT_STALLED_INTERVAL_MS
    assert settings.liveness_stall_seconds == contract.DEFAULT_LIVENESS_STALL_SECONDS
    assert settings.startup_timeout_seconds == contract.DEFAULT_STARTUP_TIMEOUT_SECONDS


def test_redis_url_file_wins_over_redis_url(tmp_path: Path):
    secret = tmp_path / "url"
    secret.write_text("redis://:s3cret@redis.internal:6380/2\n")
    env = {contract.ENV_REDIS_URL_FILE: str(secret), contract.ENV_REDIS_URL: "redis://other:6379/0"}
    assert redis_url_from_env(env) == "redis://:s3cret@redis.internal:6380/2"
    assert redis_url_from_env({contract.ENV_REDIS_URL: "rediss://h:1/0"}) == "rediss://h:1/0"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({contract.ENV_CONCURRENCY_PER_QUEUE: "0"}, contract.ENV_CONCURRENCY_PER_QUEUE),
        ({contract.ENV_CONCURRENCY_PER_QUEUE: "ten"}, contract.ENV_CONCURRENCY_PER_QUEUE),
        ({contract.ENV_HEALTH_PORT: "70000"}, contract.ENV_HEALTH_PORT),
        ({contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "-1"}, contract.ENV_SHUTDOWN_TIMEOUT_SECONDS),
        ({contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: "nan"}, contract.ENV_SHUTDOWN_TIMEOUT_SECONDS),
        ({contract.ENV_LOCK_DURATION_MS: "500"}, contract.ENV_LOCK_DURATION_MS),
        ({contract.ENV_STALLED_INTERVAL_MS: "1.5"}, contract.ENV_STALLED_INTERVAL_MS),
        ({contract.ENV_LIVENESS_STALL_SECONDS: "0"}, contract.ENV_LIVENESS_STALL_SECONDS),
        ({contract.ENV_STARTUP_TIMEOUT_SECONDS: "soon"}, contract.ENV_STARTUP_TIMEOUT_SECONDS),
        ({contract.ENV_LOG_LEVEL: "chatty"}, contract.ENV_LOG_LEVEL),
        ({contract.ENV_QUEUES: "emails, bad queue"}, contract.ENV_QUEUES),
        ({contract.ENV_QUEUES: "a,b,a"}, contract.ENV_QUEUES),
        ({contract.ENV_REDIS_URL: "http://redis:6379"}, contract.ENV_REDIS_URL),
        ({contract.ENV_REDIS_URL_FILE: "/nonexistent/url"}, contract.ENV_REDIS_URL_FILE),
    ],
)
def test_invalid_values_name_the_variable_and_the_value(env: dict[str, str], variable: str):
    with pytest.raises(SettingsError) as raised:
        load_worker_settings(env)
    message = str(raised.value)
    assert raised.value.variable.startswith(variable)
    assert variable in message and "expected" in message and "\n" not in message


def test_the_old_ambiguous_concurrency_name_is_refused_not_ignored():
    with pytest.raises(SettingsError) as raised:
        load_worker_settings({contract.LEGACY_ENV_CONCURRENCY: "10"})
    assert raised.value.variable == contract.LEGACY_ENV_CONCURRENCY
    assert contract.ENV_CONCURRENCY_PER_QUEUE in str(raised.value)


def test_helpers_parse_and_bound():
    assert queues_from_env({contract.ENV_QUEUES: " emails ,, reports "}) == ["emails", "reports"]
    assert env_int({"X": " 7 "}, "X", 1, minimum=1, maximum=10) == 7
    assert env_float({"X": "2.5"}, "X", 1.0, minimum=0) == 2.5
    assert env_int({}, "X", 3) == 3
    with pytest.raises(SettingsError, match="from 1 to 10"):
        env_int({"X": "11"}, "X", 1, minimum=1, maximum=10)


def test_password_is_not_echoed_in_url_errors():
    with pytest.raises(SettingsError) as raised:
        redis_url_from_env({contract.ENV_REDIS_URL: "http://:hunter2@redis:6379"})
    assert "hunter2" not in str(raised.value)


def test_invalid_environment_exits_2_with_one_line():
    result = run_cli(env={contract.ENV_CONCURRENCY_PER_QUEUE: "lots"})
    assert result.returncode == contract.EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert contract.ENV_CONCURRENCY_PER_QUEUE in lines[0] and "'lots'" in lines[0]

    result = run_cli(env={contract.ENV_HANDLERS: "no_such_module:HANDLERS"})
    assert result.returncode == contract.EXIT_USAGE
    assert len(result.stderr.strip().splitlines()) == 1 and contract.ENV_HANDLERS in result.stderr


def test_dead_processing_loop_exits_1(redis_server: RedisServer, workers: WorkerFactory):
    """B4 end to end: a user handler module whose bug kills bullmq's loop makes the process exit 1."""
    worker = workers.start(
        env={
            contract.ENV_HANDLERS: "tests.worker.loop_killer:HANDLERS",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
    )
    enqueue(redis_server.url, "kill-the-loop", {})
    assert worker.wait_exit(timeout=30) == contract.EXIT_FAILURE
    fatal = next(entry for entry in worker.logs() if entry["level"] == "CRITICAL")
    assert "processing loop of jobs" in fatal["msg"] and "listener bug" in fatal.get("exc", "")


def test_dlq_subcommand_is_delegated():
    result = run_cli("dlq", "--help", env={})
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_help_lists_the_subcommands():
    result = run_cli("--help", env={})
    assert result.returncode == 0
    for command in ("run", "healthcheck", "dlq"):
        assert command in result.stdout
