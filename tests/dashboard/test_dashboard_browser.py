"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a real
`killsafe-dashboard`, a real `killsafe-worker` and a real redis-server.

An operator signs in, finds the failed job with its reason and stack trace, ends the outage, retries
it and watches it complete, and finds the audit entry with her name; a never-auto-retry job is refused
until she confirms; a viewer sees the same pages without any way to change them; a script in job data
is shown as text and never runs. Each step is printed with its result, and the main pages are saved as
screenshots in the test's output folder (printed at the start).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from killsafe_worker import contract
from tests.conftest import RedisServer, require
from tests.dashboard.conftest import (
    NEVER,
    QUEUE,
    USERS,
    DashboardFactory,
    audit_records,
    fail_during_outage,
    handler_worker_env,
    job_state,
)
from tests.worker.conftest import WorkerFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no connections out of this machine
    "--disable-component-update",
    "--disable-sync",
]
XSS = '<script>window.__pwned = 1; document.title = "pwned"</script><img src=x onerror="window.__pwned = 2">'
WAIT_MS = 30_000


class Steps:
    """Numbered steps printed to the terminal (not captured) with their result and duration."""

    def __init__(self, out: Callable[[str], None], shots: Path) -> None:
        self.out = out
        self.shots = shots
        self.number = 0

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        self.number += 1
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.out(f"[browser] step {self.number}: {description} ... FAILED ({time.monotonic() - started:.1f} s)")
            raise
        self.out(f"[browser] step {self.number}: {description} ... ok ({time.monotonic() - started:.1f} s)")

    def shot(self, page: Any, name: str) -> None:
        path = self.shots / f"{self.number:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.out(f"[browser]         screenshot {path}")


@pytest.fixture
def steps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Steps:
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def out(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)

    out(f"\n[browser] screenshots go to {shots}")
    return Steps(out, shots)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (no browser download). Started after the test's setup:
    Playwright's sync API runs an event loop of its own in this thread, so asyncio.run() (bullmq's
    Queue in the helpers) cannot run while it is up."""
    require("chromium", "the browser test drives Debian's headless Chromium")
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        # Playwright leaves the thread with no event loop set; code that calls asyncio.get_event_loop()
        # at import (pulumi does) would fail in any later test, so give the thread a fresh one.
        asyncio.set_event_loop(asyncio.new_event_loop())


def test_operator_and_viewer_in_a_real_browser(
    steps: Steps,
    module_redis: RedisServer,
    rds: redis.Redis,
    dashboards: DashboardFactory,
    module_workers: WorkerFactory,
) -> None:
    module_workers.start(queues=QUEUE, env=handler_worker_env())
    dashboard = dashboards.start()
    base = dashboard.url("")
    fail_during_outage(
        rds,
        module_redis.url,
        [
            ("send_email", "welcome-1", {"to": "ann@example.invalid", "subject": XSS}),
            (NEVER, "charge-7", {"order": 7, "amount_cents": 4200}),
            ("send_email", "welcome-2", {"to": "ben@example.invalid"}),
        ],
    )
    with chromium() as browser:
        browse(browser, steps, base, rds)


def browse(browser: Any, steps: Steps, base: str, rds: redis.Redis) -> None:
    from playwright.sync_api import expect

    def context(user: str | None) -> Any:
        credentials = {"username": user, "password": USERS[user][1]} if user else None
        made = browser.new_context(http_credentials=credentials, viewport={"width": 1280, "height": 900})
        made.set_default_timeout(WAIT_MS)
        return made

    anonymous = context(None)
    with steps.step("without credentials, or with a wrong password, the dashboard answers 401 and shows nothing"):
        # Chromium turns a basic-auth 401 without usable credentials into ERR_INVALID_AUTH_CREDENTIALS
        # (a navigation error, no page), so the answer itself is read through the context's requests.
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}):
            answer = anonymous.request.get(base + f"/queues/{QUEUE}/failed", headers=headers)
            assert answer.status == 401 and "welcome-1" not in answer.text()
            assert answer.headers["www-authenticate"].startswith("Basic ")
    anonymous.close()

    alice = context("alice")
    page = alice.new_page()
    with steps.step("alice (operator) signs in: every queue with its counts, the worker ready"):
        page.goto(base + "/")
        expect(page.locator("#who")).to_contain_text("Signed in as alice · operator")
        row = page.locator(f"#queue-{QUEUE}")
        expect(row.locator('[data-state="failed"]')).to_have_text("3")
        expect(row.locator('[data-rate="failed"]')).to_have_text("3")
        expect(row.locator('[data-rate="completed"]')).to_have_text("0")
        expect(page.locator("#workers .worker-status")).to_have_text("ready")
        header_colour = page.locator("header").evaluate("e => getComputedStyle(e).backgroundColor")
        assert header_colour == "rgb(244, 246, 248)", "the stylesheet loads under the CSP"
        steps.shot(page, "overview")

    with steps.step("the failed jobs, newest first, with their reasons"):
        page.get_by_role("link", name=f"Failed in {QUEUE}").click()
        expect(page.locator("#summary")).to_contain_text("3 failed jobs, newest first")
        table = page.locator("#failed")
        expect(table).to_contain_text("welcome-1")
        expect(table).to_contain_text("SMTP 421 mail.example.invalid")
        expect(table.locator("tr", has_text="charge-7")).to_contain_text("never auto-retry")
        steps.shot(page, "failed-jobs")

    with steps.step("welcome-1: failure reason, stack trace, and the script in its data shown as text"):
        page.get_by_role("link", name="welcome-1", exact=True).click()
        expect(page.locator("#job-state")).to_have_text("failed")
        expect(page.locator("#failed-reason")).to_have_text(
            "SMTP 421 mail.example.invalid: service not available, closing transmission channel"
        )
        expect(page.locator("#stacktrace-1")).to_contain_text("SmtpUnavailable")
        expect(page.locator("#stacktrace-1")).to_contain_text("tests/dashboard/handlers.py")
        expect(page.locator("#job-data")).to_contain_text("<script>window.__pwned = 1;")
        assert page.evaluate("() => window.__pwned") is None, "the script in job data ran"
        assert page.evaluate("() => document.querySelectorAll('script, img').length") == 0
        assert "pwned" not in page.title()
        steps.shot(page, "job-failed")

    with steps.step("the outage ends; alice retries welcome-1 with a reason and watches it complete"):
        rds.delete("killsafe-test:outage")
        page.locator("#reason").fill("SMTP relay back after INC-1042")
        page.locator("#retry-button").click()
        expect(page.locator("#notice")).to_contain_text("Retried")
        expect(page.locator("#job-state")).to_have_text("completed")  # the page refreshes itself meanwhile
        expect(page.locator("#job-return")).to_contain_text('"sent": true')
        assert job_state(rds, "welcome-1") == "completed"
        steps.shot(page, "job-completed")

    with steps.step("the audit trail names alice, her reason and when"):
        history = page.locator("#history")
        expect(history).to_contain_text("alice")
        expect(history).to_contain_text("SMTP relay back after INC-1042")
        page.get_by_role("link", name="Audit trail").click()
        entry = page.locator("#audit tr", has_text="welcome-1")
        expect(entry.locator(".by")).to_have_text("alice")
        expect(entry).to_contain_text("SMTP relay back after INC-1042")
        expect(entry).to_contain_text("basic")
        (record,) = [r for r in audit_records(rds) if r["job_id"] == "welcome-1"]
        assert (record["by"], record["authenticated"], record["command"]) == ("alice", "basic", "dashboard retry")
        steps.shot(page, "audit")

    with steps.step("charge-7 (never auto-retry): the page says why, and a retry without confirmation is refused"):
        page.goto(base + f"/queues/{QUEUE}/jobs/charge-7")
        expect(page.locator("#never-why")).to_contain_text(contract.ENV_NEVER_AUTO_RETRY)
        expect(page.locator("#never-why")).to_contain_text("may not be safe to repeat")
        page.locator("#reason").fill("provider is back")
        page.locator("#retry-button").click()
        expect(page.locator("#error")).to_contain_text("tick the confirmation box")
        expect(page.locator("#job-state")).to_have_text("failed")
        assert job_state(rds, "charge-7") == "failed"
        assert not [r for r in audit_records(rds) if r["job_id"] == "charge-7"]
        steps.shot(page, "never-auto-retry-refused")

    with steps.step("with the box ticked and what she checked, charge-7 is retried and completes"):
        page.locator("#confirm").check()
        page.locator("#reason").fill("PSP shows no charge for order 7")
        page.locator("#retry-button").click()
        expect(page.locator("#job-state")).to_have_text("completed")
        (record,) = [r for r in audit_records(rds) if r["job_id"] == "charge-7"]
        assert (record["by"], record["confirmed"]) == ("alice", "true")
        steps.shot(page, "never-auto-retry-confirmed")
    alice.close()

    bob = context("bob")
    page = bob.new_page()
    with steps.step("bob (viewer) sees welcome-2 with its reason and no way to retry it"):
        page.goto(base + f"/queues/{QUEUE}/jobs/welcome-2")
        expect(page.locator("#who")).to_contain_text("bob · viewer")
        expect(page.locator("#failed-reason")).to_contain_text("SMTP 421")
        expect(page.locator("#read-only")).to_contain_text("viewers see everything and change nothing")
        assert page.locator("#retry-form").count() == 0 and page.locator("button").count() == 0
        steps.shot(page, "viewer")

    with steps.step("a retry POSTed from bob's browser is refused and changes nothing"):
        before = rds.hgetall(f"bull:{QUEUE}:welcome-2")
        answer = page.request.post(
            base + f"/queues/{QUEUE}/jobs/welcome-2/retry", form={"reason": "I am only a viewer"}
        )
        assert answer.status == 403 and "viewers see everything and change nothing" in answer.text()
        assert rds.hgetall(f"bull:{QUEUE}:welcome-2") == before
        assert job_state(rds, "welcome-2") == "failed"
    bob.close()
