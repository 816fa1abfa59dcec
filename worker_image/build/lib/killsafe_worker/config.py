"""Worker settings from the environment, validated once at startup.

Every value is checked before anything connects, so a typo fails fast with one line that names the
variable, the value and what is expected (the CLI prints it and exits 2) instead of a traceback or
a worker that runs with a silently wrong deadline.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from killsafe_worker import contract

REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_QUEUE_NAME = re.compile(contract.QUEUE_NAME_PATTERN)


class SettingsError(Exception):
    """An invalid environment value; str() is a single line naming the variable, value and expectation."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        super().__init__(f"invalid {variable}={value!r}: expected {expected}")


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker process needs, already validated and in the units it uses."""

    redis_url: str
    queues: tuple[str, ...]
    concurrency: int
    """Per queue (KILLSAFE_CONCURRENCY_PER_QUEUE): one bullmq Worker per queue, each this concurrent."""
    health_port: int
    shutdown_timeout_seconds: float
    lock_duration_ms: int
    stalled_interval_ms: int
    liveness_stall_seconds: float
    startup_timeout_seconds: float
    log_level: str


def _check_redis_url(variable: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in REDIS_URL_SCHEMES:
        shown = url if "@" not in url else "<redacted>"
        raise SettingsError(variable, shown, "a URL starting with redis://, rediss:// or unix://")
    return url


def redis_url_from_env(environ: Mapping[str, str]) -> str:
    """REDIS_URL_FILE (a mounted secret) wins over REDIS_URL; the local default only if neither is set."""
    url_file = environ.get(contract.ENV_REDIS_URL_FILE, "").strip()
    if url_file:
        try:
            url = Path(url_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SettingsError(
                contract.ENV_REDIS_URL_FILE,
                url_file,
                f"a readable file holding the Redis URL ({err.strerror})",
            ) from err
        if not url:
            raise SettingsError(contract.ENV_REDIS_URL_FILE, url_file, "a file holding a non-empty Redis URL")
        return _check_redis_url(f"{contract.ENV_REDIS_URL_FILE} (content of {url_file})", url)
    url = environ.get(contract.ENV_REDIS_URL, "").strip()
    if url:
        return _check_redis_url(contract.ENV_REDIS_URL, url)
    return contract.DEFAULT_REDIS_URL


def queues_from_env(environ: Mapping[str, str]) -> list[str]:
    """Comma-separated queue names (blanks ignored, duplicates rejected); the default queue if unset."""
    raw = environ.get(contract.ENV_QUEUES, "")
    if not raw.strip():
        return [contract.DEFAULT_QUEUE]
    queues = [name.strip() for name in raw.split(",") if name.strip()]
    for name in queues:
        if not _QUEUE_NAME.match(name):
            raise SettingsError(
                contract.ENV_QUEUES,
                raw,
                f"comma-separated queue names matching {contract.QUEUE_NAME_PATTERN}",
            )
    duplicates = sorted({name for name in queues if queues.count(name) > 1})
    if duplicates:
        raise SettingsError(contract.ENV_QUEUES, raw, f"each queue listed once ({duplicates[0]!r} is repeated)")
    return queues


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """An integer variable within [minimum, maximum]; `default` when unset or blank."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, raw, f"an integer{_bounds(minimum, maximum)}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingsError(name, raw, f"an integer{_bounds(minimum, maximum)}")
    return value


def env_float(
    environ: Mapping[str, str],
    name: str,
    default: float,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite number within [minimum, maximum]; `default` when unset or blank."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, raw, f"a number{_bounds(minimum, maximum)}") from None
    if not math.isfinite(value):
        raise SettingsError(name, raw, f"a finite number{_bounds(minimum, maximum)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingsError(name, raw, f"a number{_bounds(minimum, maximum)}")
    return value


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def log_level_from_env(environ: Mapping[str, str]) -> str:
    """One of the stdlib level names (case-insensitive)."""
    raw = environ.get(contract.ENV_LOG_LEVEL, "").strip()
    if not raw:
        return contract.DEFAULT_LOG_LEVEL
    level = raw.upper()
    if level not in LOG_LEVELS or not isinstance(logging.getLevelName(level), int):
        raise SettingsError(contract.ENV_LOG_LEVEL, raw, "one of " + ", ".join(LOG_LEVELS))
    return level


def concurrency_from_env(environ: Mapping[str, str]) -> int:
    """Jobs in flight per queue. The old name is refused rather than ignored: a deployment still
    setting it would otherwise run silently at the default concurrency."""
    legacy = environ.get(contract.LEGACY_ENV_CONCURRENCY, "").strip()
    if legacy:
        raise SettingsError(
            contract.LEGACY_ENV_CONCURRENCY,
            legacy,
            f"nothing: it was renamed {contract.ENV_CONCURRENCY_PER_QUEUE} (jobs in flight per queue; "
            "a worker consuming N queues runs up to N x this many)",
        )
    return env_int(environ, contract.ENV_CONCURRENCY_PER_QUEUE, contract.DEFAULT_CONCURRENCY, minimum=1, maximum=1000)


def load_worker_settings(environ: Mapping[str, str]) -> WorkerSettings:
    """Validate every worker variable; raises SettingsError on the first bad one."""
    lock_duration_ms = env_int(
        environ,
        contract.ENV_LOCK_DURATION_MS,
        contract.DEFAULT_LOCK_DURATION_MS,
        minimum=1000,
        maximum=3_600_000,
    )
    return WorkerSettings(
        redis_url=redis_url_from_env(environ),
        queues=tuple(queues_from_env(environ)),
        concurrency=concurrency_from_env(environ),
        health_port=env_int(environ, contract.ENV_HEALTH_PORT, contract.HEALTH_PORT, minimum=1, maximum=65_535),
        shutdown_timeout_seconds=env_float(
            environ,
            contract.ENV_SHUTDOWN_TIMEOUT_SECONDS,
            contract.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
            minimum=0,
            maximum=86_400,
        ),
        lock_duration_ms=lock_duration_ms,
        stalled_interval_ms=env_int(
            environ,
            contract.ENV_STALLED_INTERVAL_MS,
            contract.DEFAULT_STALLED_INTERVAL_MS,
            minimum=100,
            maximum=3_600_000,
        ),
        liveness_stall_seconds=env_float(
            environ,
            contract.ENV_LIVENESS_STALL_SECONDS,
            contract.DEFAULT_LIVENESS_STALL_SECONDS,
            minimum=1,
            maximum=86_400 * 7,
        ),
        startup_timeout_seconds=env_float(
            environ,
            contract.ENV_STARTUP_TIMEOUT_SECONDS,
            contract.DEFAULT_STARTUP_TIMEOUT_SECONDS,
            minimum=0.1,
            maximum=3600,
        ),
        log_level=log_level_from_env(environ),
    )
