"""JSON log lines: one object per line, the job bound to every line logged inside its handler."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging

import pytest

from killsafe_worker.logs import bind_log_fields, configure_logging, job_log_context, unbind_log_fields


@pytest.fixture
def json_logs():
    """configure_logging() writing to a buffer standing in for stderr; returns the parsed lines."""
    stderr = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    with contextlib.redirect_stderr(stderr):
        configure_logging("DEBUG")
    try:
        yield lambda: [json.loads(line) for line in stderr.getvalue().splitlines() if line]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def test_lines_are_json_with_the_standard_fields_and_extras(json_logs):
    log = logging.getLogger("user.module")
    log.info("hello %s", "there", extra={"orderId": 42})
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("failed\nacross lines")
    first, second = json_logs()
    assert first["msg"] == "hello there" and first["level"] == "INFO" and first["logger"] == "user.module"
    assert first["orderId"] == 42 and first["ts"].endswith("Z")
    assert second["level"] == "ERROR" and "ValueError: broken" in second["exc"]


def test_concurrent_jobs_each_log_their_own_job(json_logs):
    async def handler(job_id: str, pause: float) -> None:
        with job_log_context(job_id, "sleep", attempt=2):
            await asyncio.sleep(pause)
            logging.getLogger("user.handler").info("working")  # a user's handler, no job passed in

    async def both() -> None:
        await asyncio.gather(handler("a", 0.02), handler("b", 0.01))
        logging.getLogger("outside").info("no job here")

    asyncio.run(both())
    lines = [line for line in json_logs() if line["logger"] != "asyncio"]
    assert [(line["jobId"], line["jobName"], line["attempt"]) for line in lines[:2]] == [
        ("b", "sleep", 2),
        ("a", "sleep", 2),
    ]
    assert "jobId" not in lines[2]


def test_bound_fields_are_undone(json_logs):
    token = bind_log_fields(queue="emails")
    logging.getLogger("x").warning("inside")
    unbind_log_fields(token)
    logging.getLogger("x").warning("after")
    inside, after = json_logs()
    assert inside["queue"] == "emails" and "queue" not in after
