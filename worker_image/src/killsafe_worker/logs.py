"""JSON logs, one object per line on stderr, with the current job bound to every line.

Log collectors (CloudWatch, Loki, journald) index JSON fields, so a job's lines can be found by
jobId across workers and restarts. The job is bound through a context variable: asyncio copies the
context into each job's task, so a user's handler calling `logging.getLogger(__name__).info(...)`
gets jobId/jobName/attempt without passing anything around, and concurrent jobs never mix.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from killsafe_worker import contract

_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_bound_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "killsafe_log_fields", default=_NO_FIELDS
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged too.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


def bind_log_fields(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields to every line logged from the current context (task); undo with `unbind_log_fields`."""
    return _bound_fields.set({**_bound_fields.get(), **fields})


def unbind_log_fields(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _bound_fields.reset(token)


@contextmanager
def job_log_context(job_id: str | None, job_name: str | None, attempt: int) -> Iterator[None]:
    """Bind jobId, jobName and attempt (1-based) to every line logged inside the block."""
    token = bind_log_fields(jobId=job_id, jobName=job_name, attempt=attempt)
    try:
        yield
    finally:
        unbind_log_fields(token)


def bound_log_fields() -> Mapping[str, Any]:
    """The fields bound in the current context (for code that forwards them, e.g. to a child process)."""
    return _bound_fields.get()


MIN_SCRUBBED_SECRET_LENGTH = 4
"""Shorter secrets are not scrubbed (replacing "ab" everywhere would garble every line); such a
password is unsafe anyway."""


class JsonFormatter(logging.Formatter):
    """ts (RFC 3339 UTC, ms), level, logger, msg, then bound context fields and `extra=` fields.

    `secrets` (the Redis credentials) are replaced by *** in every line, whatever logged them: a
    last line of defence behind the explicit redaction of URLs (config.redact_url).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        forms = set()
        for secret in secrets:
            if len(secret) >= MIN_SCRUBBED_SECRET_LENGTH:
                forms.update({secret, json.dumps(secret, ensure_ascii=False)[1:-1]})
        self._secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = self._format(record)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_bound_fields.get())
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str | None = None, secrets: Iterable[str] = ()) -> None:
    """Route all stdlib logging (ours, bullmq's, the user's) to stderr as JSON lines, with `secrets`
    scrubbed from every line. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel((level or contract.DEFAULT_LOG_LEVEL).upper())
    logging.captureWarnings(True)
