"""Worker settings from the environment, validated once at startup.

Every value is checked before anything connects, so a typo fails fast with one line that names the
variable, the value and what is expected (the CLI prints it and exits 2) instead of a traceback or
a worker that runs with a silently wrong deadline.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from killsafe_worker import contract

REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_QUEUE_NAME = re.compile(contract.QUEUE_NAME_PATTERN)
_KEY_PREFIX = re.compile(contract.KEY_PREFIX_PATTERN)
_SECRET_QUERY_PARAM = re.compile(r"pass|user|auth|token|secret|cred|key", re.IGNORECASE)
"""Query parameters of a Redis URL whose values are credentials (redis-py accepts ?password=...)."""
UNPARSEABLE_URL = "<unparseable URL, redacted>"


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
    key_prefix: str
    max_job_seconds: float
    max_stalled_count: int
    health_port: int
    shutdown_timeout_seconds: float
    lock_duration_ms: int
    stalled_interval_ms: int
    liveness_stall_seconds: float
    startup_timeout_seconds: float
    log_level: str
    memory_limit_mib: int | None = None
    """KILLSAFE_MEMORY_LIMIT_MIB; the cgroup's own limit applies too (the smaller one counts)."""
    memory_drain_percent: int | None = None
    """KILLSAFE_MEMORY_DRAIN_PERCENT; None: derived from the limit (contract.default_memory_drain_percent)."""
    redis_url_file: str | None = None
    """Where redis_url came from, if a file: it is read again for each new connection (rotated passwords)."""


def redact_url(url: str) -> str:
    """The URL with every credential replaced by ***: userinfo, and the values of query parameters
    such as password= and username= (redis-py accepts both); an unparseable URL is not shown at all."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError:
        return UNPARSEABLE_URL
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{quote(name)}=***" if _SECRET_QUERY_PARAM.search(name) else f"{quote(name)}={quote(value)}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The credential strings inside a Redis URL (raw and percent-decoded), for scrubbing log lines."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    for piece in [userinfo, *userinfo.split(":", 1)] if userinfo else []:
        found.update({piece, unquote(piece)})
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY_PARAM.search(name):
            found.update({value, unquote(value)})
    return sorted(secret for secret in found if secret)


def _check_redis_url(variable: str, url: str) -> str:
    """A URL redis-py will accept; every error shows the URL redacted (or not at all)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise SettingsError(variable, UNPARSEABLE_URL, "a redis://, rediss:// or unix:// URL") from None
    if parts.scheme not in REDIS_URL_SCHEMES:
        scheme = f"{parts.scheme}://" if parts.scheme.isalnum() else "no scheme"
        raise SettingsError(variable, f"<{scheme} URL, redacted>", "a URL starting with redis://, rediss:// or unix://")
    shown = redact_url(url)
    try:
        port = parts.port
    except ValueError:
        raise SettingsError(variable, shown, "a URL whose port is a number from 1 to 65535") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise SettingsError(variable, shown, "a unix:// URL with the socket path, e.g. unix:///run/redis.sock")
        return url
    if port == 0:
        raise SettingsError(variable, shown, "a URL whose port is a number from 1 to 65535")
    if not parts.hostname:
        raise SettingsError(variable, shown, "a URL with a host, e.g. redis://redis.internal:6379/0")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise SettingsError(variable, shown, "a URL whose path is a database number, e.g. /0")
    return url


def forget_redis_credentials(environ: MutableMapping[str, str]) -> None:
    """Drop the Redis URL (and its file's path) from the environment once read, so no child process
    (the sandbox's fork server and job children, a user's subprocess) inherits the credentials."""
    for name in (contract.ENV_REDIS_URL, contract.ENV_REDIS_URL_FILE):
        environ.pop(name, None)


def key_prefix_from_env(environ: Mapping[str, str]) -> str:
    """BullMQ's key prefix (Node's `prefix`): the same on every producer, worker and dashboard."""
    raw = environ.get(contract.ENV_KEY_PREFIX, "").strip()
    if not raw:
        return contract.DEFAULT_KEY_PREFIX
    if not _KEY_PREFIX.match(raw):
        raise SettingsError(contract.ENV_KEY_PREFIX, raw, f"a BullMQ prefix matching {contract.KEY_PREFIX_PATTERN}")
    return raw


def redis_url_file_from_env(environ: Mapping[str, str]) -> str | None:
    return environ.get(contract.ENV_REDIS_URL_FILE, "").strip() or None


def redis_url_from_env(environ: Mapping[str, str]) -> str:
    """REDIS_URL_FILE (a mounted secret) wins over REDIS_URL; the local default only if neither is set."""
    url_file = redis_url_file_from_env(environ)
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
    queues = tuple(queues_from_env(environ))
    concurrency = concurrency_from_env(environ)
    return WorkerSettings(
        redis_url=redis_url_from_env(environ),
        redis_url_file=redis_url_file_from_env(environ),
        queues=queues,
        concurrency=concurrency,
        key_prefix=key_prefix_from_env(environ),
        max_job_seconds=env_float(
            environ, contract.ENV_MAX_JOB_SECONDS, contract.DEFAULT_MAX_JOB_SECONDS, minimum=0.1, maximum=86_400
        ),
        max_stalled_count=env_int(
            environ,
            contract.ENV_MAX_STALLED_COUNT,
            contract.default_max_stalled_count(concurrency * len(queues)),
            minimum=0,
            maximum=100,
        ),
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
        memory_limit_mib=env_int(environ, contract.ENV_MEMORY_LIMIT_MIB, 0, minimum=1, maximum=16_777_216) or None,
        memory_drain_percent=env_int(
            environ,
            contract.ENV_MEMORY_DRAIN_PERCENT,
            0,
            minimum=contract.MIN_MEMORY_DRAIN_PERCENT,
            maximum=contract.MEMORY_DRAIN_OFF,
        )
        or None,
    )
