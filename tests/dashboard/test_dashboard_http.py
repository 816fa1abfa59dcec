"""The dashboard over real HTTP: a real `killsafe-dashboard` process in front of a real redis-server whose
jobs a real `killsafe-worker` failed (and, once retried, completes).

Every refusal is checked twice: the status code, and that Redis is exactly as before (the job still
failed, no audit record).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from killsafe_worker import contract
from killsafe_worker.config import SettingsError
from killsafe_worker.dashboard.app import CONTENT_SECURITY_POLICY
from killsafe_worker.dashboard.auth import authenticator_for, parse_credentials
from killsafe_worker.dashboard.cli import hash_password_line
from killsafe_worker.dashboard.settings import load_dashboard_settings
from tests.conftest import RedisServer
from tests.dashboard.conftest import (
    NEVER,
    QUEUE,
    USERS,
    DashboardFactory,
    DashboardProcess,
    audit_records,
    fail_during_outage,
    handler_worker_env,
    job_state,
    write_credentials,
    write_failed_jobs,
)
from tests.worker.conftest import WorkerFactory, enqueue_many, wait_for
from tests.worker.test_web import start_web

NUMBERS = "numbers"
"""A second queue of the module's dashboard, with a worker of its own (the overview's numbers)."""


@dataclass
class Stack:
    dashboard: DashboardProcess
    rds: redis.Redis
    url: str
    workers: WorkerFactory

    def fail(self, *jobs: tuple[str, str, dict[str, object]]) -> None:
        fail_during_outage(self.rds, self.url, list(jobs))

    def job_page(self, job_id: str) -> str:
        return f"/queues/{QUEUE}/jobs/{job_id}"

    def retry(self, job_id: str, user: str = "alice", **form: str) -> tuple[int, str, dict[str, str]]:
        token = self.dashboard.csrf_token(self.job_page(job_id), user=user)
        answer = self.dashboard.request(
            "POST",
            self.job_page(job_id) + "/retry",
            user=user,
            form={"csrf_token": token, **form},
        )
        return answer.status, answer.body, dict(answer.headers)

    def snapshot(self, job_id: str) -> tuple[dict[str, str], int]:
        """The job's hash and the audit stream length: what a refused request must leave as it was."""
        return self.rds.hgetall(f"bull:{QUEUE}:{job_id}"), self.rds.xlen(contract.DLQ_AUDIT_STREAM)


@pytest.fixture(scope="module")
def stack(
    module_redis: RedisServer, rds: redis.Redis, dashboards: DashboardFactory, module_workers: WorkerFactory
) -> Iterator[Stack]:
    module_workers.start(queues=QUEUE, env=handler_worker_env())
    dashboard = dashboards.start({contract.ENV_QUEUES: f"{QUEUE},{NUMBERS}"})
    yield Stack(dashboard, rds, module_redis.url, module_workers)


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_without_valid_credentials_every_page_is_401_and_nothing_changes(stack: Stack) -> None:
    stack.fail(("send_email", "auth-1", {"to": "a@example.invalid"}))
    before = stack.snapshot("auth-1")
    token = stack.dashboard.csrf_token(stack.job_page("auth-1"))
    wrong = [
        {},
        _basic("alice", "not-her-password"),
        _basic("mallory", "alice-correct-horse"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer alice"},
    ]
    for headers in wrong:
        for path in ("/", f"/queues/{QUEUE}/failed", stack.job_page("auth-1"), "/audit"):
            answer = stack.dashboard.request("GET", path, headers=headers)
            assert answer.status == 401, (path, headers, answer.status)
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="killsafe dashboard", charset="UTF-8"'
            assert "auth-1" not in answer.body and "SMTP" not in answer.body
        posted = stack.dashboard.request(
            "POST",
            stack.job_page("auth-1") + "/retry",
            headers=headers,
            form={"csrf_token": token, "reason": "sneaky", "confirm": "yes"},
        )
        assert posted.status == 401
    assert stack.snapshot("auth-1") == before
    assert job_state(stack.rds, "auth-1") == "failed"
    # The probes stay open (kubelet and load balancers do not log in) and reveal nothing.
    assert stack.dashboard.get(contract.LIVE_PATH, user=None).status == 200
    ready = stack.dashboard.get(contract.READY_PATH, user=None)
    assert ready.status == 200 and json.loads(ready.body) == {"ready": True}


def test_a_post_without_a_valid_csrf_token_or_from_another_site_is_refused(stack: Stack) -> None:
    stack.fail(("send_email", "csrf-1", {"to": "b@example.invalid"}))
    before = stack.snapshot("csrf-1")
    path = stack.job_page("csrf-1") + "/retry"
    alice_token = stack.dashboard.csrf_token(stack.job_page("csrf-1"), user="alice")
    carol_token = stack.dashboard.csrf_token(stack.job_page("csrf-1"), user="carol")
    issued, mac = alice_token.split(".")
    attempts: list[tuple[dict[str, str], dict[str, str], str]] = [
        ({"reason": "no token"}, {}, "CSRF token"),
        ({"reason": "empty", "csrf_token": ""}, {}, "CSRF token"),
        ({"reason": "tampered", "csrf_token": f"{issued}.{mac[:-1]}0"}, {}, "CSRF token"),
        ({"reason": "replayed later", "csrf_token": f"{int(issued) + 99_999}.{mac}"}, {}, "CSRF token"),
        ({"reason": "carol's token", "csrf_token": carol_token}, {}, "CSRF token"),
        ({"reason": "cross-site", "csrf_token": alice_token}, {"Origin": "https://evil.example"}, "cross-site"),
        ({"reason": "cross-site", "csrf_token": alice_token}, {"Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({"reason": "sibling", "csrf_token": alice_token}, {"Sec-Fetch-Site": "same-site"}, "cross-site"),
    ]
    for form, headers, message in attempts:
        answer = stack.dashboard.request("POST", path, user="alice", form=form, headers=headers)
        assert answer.status == 403, (form, headers, answer.status)
        assert message in answer.body
    assert stack.snapshot("csrf-1") == before
    # The same token, from the same origin, works: the refusals above were about the token and origin.
    same_origin = {"Origin": stack.dashboard.url("").rstrip("/")}
    answer = stack.dashboard.request(
        "POST", path, user="alice", form={"reason": "SMTP back", "csrf_token": alice_token}, headers=same_origin
    )
    assert answer.status == 303


def test_a_viewer_sees_everything_and_changes_nothing(stack: Stack) -> None:
    stack.fail(("send_email", "view-1", {"to": "c@example.invalid"}), (NEVER, "view-c1", {"amount": 5}))
    before = stack.snapshot("view-1")
    for path in (
        "/",
        f"/queues/{QUEUE}/failed",
        stack.job_page("view-1"),
        "/audit",
        f"/queues/{QUEUE}/retry-selection",
    ):
        page = stack.dashboard.get(path, user="bob")
        assert page.status == 200, path
        assert "Signed in as <strong>bob</strong> · viewer" in page.body
    job = stack.dashboard.get(stack.job_page("view-1"), user="bob").body
    assert "SMTP 421" in job and "SmtpUnavailable" in job
    assert 'id="retry-form"' not in job and 'id="read-only"' in job
    assert 'id="selection-form"' not in stack.dashboard.get(f"/queues/{QUEUE}/retry-selection", user="bob").body

    # A forged POST with the viewer's own credentials (and an operator's valid token) is refused too.
    token = stack.dashboard.csrf_token(stack.job_page("view-1"), user="alice")
    for path, form in (
        (stack.job_page("view-1") + "/retry", {"csrf_token": token, "reason": "I am a viewer"}),
        (f"/queues/{QUEUE}/retry-selection", {"csrf_token": token, "reason": "all", "job_id": "view-1"}),
    ):
        answer = stack.dashboard.request("POST", path, user="bob", form=form)
        assert answer.status == 403
        assert "bob is a viewer: viewers see everything and change nothing" in answer.body
    assert stack.snapshot("view-1") == before


def test_an_operator_retry_is_audited_with_the_signed_in_name(stack: Stack) -> None:
    stack.fail(("send_email", "retry-1", {"to": "d@example.invalid"}))
    token = stack.dashboard.csrf_token(stack.job_page("retry-1"))

    status, _, headers = stack.retry("retry-1", reason="SMTP relay is back (INC-7)")

    assert status == 303
    assert re.fullmatch(rf"/queues/{QUEUE}/jobs/retry-1\?notice=retried&audit=\d+-\d+", headers["Location"])
    wait_for(lambda: job_state(stack.rds, "retry-1") == "completed", 30, "the retried job to complete")
    (record,) = [r for r in audit_records(stack.rds) if r["job_id"] == "retry-1"]
    assert {key: record[key] for key in record if key not in ("at", "os_user", "host")} == {
        "by": "alice",
        "authenticated": "basic",
        "reason": "SMTP relay is back (INC-7)",
        "command": "dashboard retry",
        "queue": QUEUE,
        "job_id": "retry-1",
        "job_name": "send_email",
        "previous_failed_reason": "SMTP 421 mail.example.invalid: service not available, closing transmission channel",
        "previous_attempts_made": "1",
        "attempts_granted": "1",
        "confirmed": "false",
    }
    page = stack.dashboard.get(headers["Location"]).body
    assert "Retried: the job is waiting again" in page
    assert 'id="job-state" class="state-completed">completed<' in page
    history = page.split('id="history"', 1)[1]
    assert '<td class="by">alice</td>' in history and "SMTP relay is back (INC-7)" in history
    assert "dashboard retry" in stack.dashboard.get("/audit").body

    # Retrying what is no longer failed is refused (409) and audits nothing.
    records = stack.rds.xlen(contract.DLQ_AUDIT_STREAM)
    answer = stack.dashboard.request(
        "POST",
        stack.job_page("retry-1") + "/retry",
        user="alice",
        form={"csrf_token": token, "reason": "again"},
    )
    assert answer.status == 409 and "is completed, not failed" in answer.body
    assert stack.rds.xlen(contract.DLQ_AUDIT_STREAM) == records


def test_a_retry_needs_a_reason(stack: Stack) -> None:
    stack.fail(("send_email", "reason-1", {}))
    before = stack.snapshot("reason-1")

    status, body, _ = stack.retry("reason-1", reason="   ")

    assert status == 400 and "Say why you retry it" in body
    assert stack.snapshot("reason-1") == before


def test_a_never_auto_retry_job_needs_an_explicit_confirmation(stack: Stack) -> None:
    stack.fail((NEVER, "charge-1", {"amount": 42}))
    before = stack.snapshot("charge-1")
    page = stack.dashboard.get(stack.job_page("charge-1")).body
    assert 'id="never-why"' in page and contract.ENV_NEVER_AUTO_RETRY in page and 'id="confirm"' in page

    status, body, _ = stack.retry("charge-1", reason="provider is back")

    assert status == 409
    assert f"&#39;{NEVER}&#39; is in {contract.ENV_NEVER_AUTO_RETRY}" in body and "tick the confirmation box" in body
    assert stack.snapshot("charge-1") == before

    status, _, _ = stack.retry("charge-1", reason="PSP dashboard shows no charge for order 42", confirm="yes")

    assert status == 303
    wait_for(lambda: job_state(stack.rds, "charge-1") == "completed", 30, "the confirmed charge to complete")
    (record,) = [r for r in audit_records(stack.rds) if r["job_id"] == "charge-1"]
    assert (record["confirmed"], record["by"], record["job_name"]) == ("true", "alice", NEVER)


def test_a_selection_is_previewed_without_changes_then_retried_with_never_auto_retry_names_skipped(
    stack: Stack,
) -> None:
    stack.fail(
        ("send_email", "sel-1", {}),
        ("send_email", "sel-2", {}),
        ("send_email", "sel-3", {}),
        (NEVER, "sel-c1", {"amount": 1}),
        ("send_email", "other-1", {}),
    )
    snapshots = {job_id: stack.snapshot(job_id) for job_id in ("sel-1", "sel-2", "sel-3", "sel-c1")}

    preview = stack.dashboard.get(f"/queues/{QUEUE}/retry-selection?q=sel-")

    assert preview.status == 200 and "Dry run: nothing has been changed" in preview.body
    would = preview.body.split('id="would-retry"', 1)[1].split("</table>", 1)[0]
    skipped = preview.body.split('id="skipped"', 1)[1].split("</table>", 1)[0]
    assert sorted(re.findall(r">(sel-\d)<", would)) == ["sel-1", "sel-2", "sel-3"] and "other-1" not in would
    assert re.findall(r">(sel-c1)<", skipped) == ["sel-c1"]
    assert {job_id: stack.snapshot(job_id) for job_id in snapshots} == snapshots, "a dry run changes nothing"

    token = re.search(r'name="csrf_token" value="([^"]+)"', preview.body)
    assert token
    answer = stack.dashboard.request(
        "POST",
        f"/queues/{QUEUE}/retry-selection",
        user="carol",
        form={
            "csrf_token": stack.dashboard.csrf_token(f"/queues/{QUEUE}/retry-selection?q=sel-", user="carol"),
            "q": "sel-",
            "reason": "relay fixed, replaying the batch",
            "job_id": ["sel-1", "sel-2", "sel-3", "sel-c1"],  # sel-c1 forged in: still skipped
        },
    )

    assert answer.status == 200 and "Retried 3 jobs; skipped 1" in answer.body
    assert "retry it on its own page" in answer.body
    for job_id in ("sel-1", "sel-2", "sel-3"):
        wait_for(lambda job_id=job_id: job_state(stack.rds, job_id) == "completed", 30, f"{job_id} to complete")
    assert job_state(stack.rds, "sel-c1") == "failed" and job_state(stack.rds, "other-1") == "failed"
    records = [r for r in audit_records(stack.rds) if r["job_id"].startswith("sel-")]
    assert sorted(r["job_id"] for r in records) == ["sel-1", "sel-2", "sel-3"]
    assert {(r["by"], r["command"], r["authenticated"]) for r in records} == {
        ("carol", "dashboard retry-selection", "basic")
    }


def test_failed_jobs_are_listed_newest_first_and_searchable_by_name_and_id(stack: Stack) -> None:
    stack.fail(("send_email", "find-me-1", {}))
    time.sleep(0.01)
    stack.fail(("echo-nope", "find-me-2", {}))  # no handler: fails with a clear reason

    listing = stack.dashboard.get(f"/queues/{QUEUE}/failed").body
    ids = re.findall(r'/jobs/([\w.-]+)">', listing)
    assert ids.index("find-me-2") < ids.index("find-me-1"), "newest first"
    by_name = stack.dashboard.get(f"/queues/{QUEUE}/failed?q=ECHO-NOPE").body
    assert re.findall(r'/jobs/([\w.-]+)">', by_name) == ["find-me-2"]
    assert "no handler for job name" in by_name
    by_id = stack.dashboard.get(f"/queues/{QUEUE}/failed?q=find-me-1").body
    assert re.findall(r'/jobs/([\w.-]+)">', by_id) == ["find-me-1"]
    assert stack.dashboard.get("/queues/nope/failed").status == 404
    assert stack.dashboard.get(f"/queues/{QUEUE}/jobs/no-such-job").status == 404


def test_attacker_controlled_text_is_escaped(stack: Stack) -> None:
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    stack.fail(("echo-" + "x", "xss-1", {"subject": payload, "nested": {"html": "</pre><b>bold</b>"}}))

    page = stack.dashboard.get(stack.job_page("xss-1")).body

    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&lt;/pre&gt;&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script" not in page and "<img" not in page and "<b>" not in page


def test_a_job_a_foreign_producer_wrote_badly_is_still_shown(stack: Stack) -> None:
    stack.rds.hset(
        f"bull:{QUEUE}:garbage-1",
        mapping={"name": "<b>odd</b>", "data": "{not json <script>", "stacktrace": "not a list", "atm": "many"},
    )
    stack.rds.zadd(f"bull:{QUEUE}:failed", {"garbage-1": 1})

    page = stack.dashboard.get(stack.job_page("garbage-1"))
    listing = stack.dashboard.get(f"/queues/{QUEUE}/failed?q=garbage")

    assert page.status == 200 and listing.status == 200
    assert 'id="job-data">{not json &lt;script&gt;</pre>' in page.body
    assert "not a list" in page.body and "&lt;b&gt;odd&lt;/b&gt;" in page.body
    assert 'id="job-state" class="state-failed"' in page.body
    assert "&lt;b&gt;odd&lt;/b&gt;" in listing.body


def test_security_headers_are_on_every_answer(stack: Stack) -> None:
    answers = [
        stack.dashboard.get("/"),
        stack.dashboard.get("/", user=None),
        stack.dashboard.get("/queues/nope/failed"),
        stack.dashboard.request("POST", stack.job_page("x") + "/retry", user="alice", form={"reason": "r"}),
        stack.dashboard.get("/static/style.css"),
    ]
    assert [answer.status for answer in answers] == [200, 401, 404, 403, 200]
    for answer in answers:
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert "script-src" not in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY


def test_the_public_web_port_does_not_serve_the_dashboard(stack: Stack) -> None:
    web = start_web(stack.url)
    try:
        for path in ("/", f"/queues/{QUEUE}/failed", stack.job_page("auth-1"), "/audit", "/static/style.css"):
            status, _ = web.get(path)
            assert status in (404, 405), (path, status)
        status, _ = _post_to_web(web.port, stack.job_page("auth-1") + "/retry")
        assert status in (404, 405)
    finally:
        web.stop()
    assert contract.DASHBOARD_PORT not in (contract.WEB_PORT, contract.HEALTH_PORT)


def _post_to_web(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"reason=x", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_overview_shows_the_numbers_the_worker_reports(stack: Stack, module_redis: RedisServer) -> None:
    queue, rds, dashboard = NUMBERS, stack.rds, stack.dashboard
    worker = stack.workers.start(queues=queue)
    enqueue_many(module_redis.url, [("echo", {"n": n}, {"jobId": f"ok-{n}"}) for n in range(5)], queue)
    enqueue_many(module_redis.url, [("fail", {"message": "nope"}, {"jobId": f"bad-{n}"}) for n in range(2)], queue)
    enqueue_many(module_redis.url, [("sleep", {"seconds": 60}, {"jobId": "later", "delay": 600_000})], queue)
    wait_for(lambda: rds.zcard(f"bull:{queue}:completed") == 5 and rds.zcard(f"bull:{queue}:failed") == 2, 30, "jobs")
    time.sleep(2.5)  # one probe interval: the worker's gauge samples again

    page = dashboard.get("/").body
    row = page.split(f'id="queue-{queue}"', 1)[1].split("</tr>", 1)[0]
    shown = {state: int(value.replace(",", "")) for state, value in re.findall(r'data-state="(\w+)">([\d,]+)<', row)}
    rates = dict(re.findall(r'data-rate="(\w+)">([\d,]+)<', row))

    for state in contract.QUEUE_STATES:
        assert shown[state] == worker.metric(contract.METRIC_QUEUE_JOBS, {"queue": queue, "state": state}), state
    assert (shown["delayed"], shown["failed"], shown["completed"]) == (1, 2, 5)
    assert rates == {"completed": "5", "failed": "2"}
    assert worker.metric(contract.METRIC_JOBS_COMPLETED, {"queue": queue}) == 5
    workers_table = page.split('id="workers"', 1)[1]
    assert f"{socket.gethostname()}:{worker.pid}" in workers_table
    row = next(r for r in workers_table.split("<tr") if f":{worker.pid}<" in r)
    assert 'class="ok"' in row and '<td class="worker-status">ready</td>' in row

    worker.send(15)
    assert worker.wait_exit(30) == 0
    wait_for(lambda: f":{worker.pid}<" not in dashboard.get("/").body, 20, "the stopped worker to leave the list")


def test_the_key_prefix_is_honoured(rds: redis.Redis, dashboards: DashboardFactory) -> None:
    write_failed_jobs(rds, [("prefixed-1", "send_email", {})], prefix="acme")
    write_failed_jobs(rds, [("unprefixed-1", "send_email", {})])  # prefix bull: not this dashboard's
    dashboard = dashboards.start({contract.ENV_KEY_PREFIX: "acme"})

    listing = dashboard.get(f"/queues/{QUEUE}/failed").body
    assert re.findall(r'/jobs/([\w.-]+)">', listing) == ["prefixed-1"]
    token = dashboard.csrf_token(f"/queues/{QUEUE}/jobs/prefixed-1")
    answer = dashboard.request(
        "POST", f"/queues/{QUEUE}/jobs/prefixed-1/retry", user="alice", form={"csrf_token": token, "reason": "r"}
    )
    assert answer.status == 303
    assert rds.lrange(f"acme:{QUEUE}:wait", 0, -1) == ["prefixed-1"]
    assert rds.zscore(f"acme:{QUEUE}:failed", "prefixed-1") is None


def test_the_retry_budget_limits_retries_per_minute(stack: Stack, dashboards: DashboardFactory) -> None:
    limited = dashboards.start({contract.ENV_DASHBOARD_RETRIES_PER_MINUTE: "2"})
    stack.fail(("send_email", "budget-1", {}), ("send_email", "budget-2", {}), ("send_email", "budget-3", {}))

    def retry(job_id: str) -> tuple[int, str, dict[str, str]]:
        path = f"/queues/{QUEUE}/jobs/{job_id}"
        answer = limited.request(
            "POST", path + "/retry", user="alice", form={"csrf_token": limited.csrf_token(path), "reason": "go"}
        )
        return answer.status, answer.body, dict(answer.headers)

    assert retry("budget-1")[0] == 303
    assert retry("budget-2")[0] == 303
    status, body, headers = retry("budget-3")
    assert status == 429 and "Retry budget spent (2 jobs a minute)" in body and int(headers["Retry-After"]) > 0
    assert job_state(stack.rds, "budget-3") == "failed"
    answer = limited.request(
        "POST",
        f"/queues/{QUEUE}/retry-selection",
        user="alice",
        form={"csrf_token": limited.csrf_token(stack.job_page("budget-3")), "reason": "all", "job_id": ["budget-3"]},
    )
    assert answer.status == 429 and "only 0 retries are left this minute" in answer.body
    assert job_state(stack.rds, "budget-3") == "failed"


def test_it_listens_on_ipv4_and_ipv6_unless_bound_to_given_addresses(
    stack: Stack, dashboards: DashboardFactory
) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback; the dual-stack test needs ::1")
    for host in ("127.0.0.1", "::1"):
        assert stack.dashboard.get("/", host=host).status == 200, host
    loopback_v4 = dashboards.start({contract.ENV_DASHBOARD_BIND: "127.0.0.1"})
    assert loopback_v4.get("/", host="127.0.0.1").status == 200
    with pytest.raises(OSError):
        loopback_v4.get("/", host="::1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({contract.ENV_DASHBOARD_AUTH: ""}, "no default password and no open mode"),
        ({contract.ENV_DASHBOARD_AUTH: "none"}, "no default password and no open mode"),
        ({contract.ENV_DASHBOARD_CREDENTIALS_FILE: ""}, "the path of the credential file"),
        ({contract.ENV_DASHBOARD_CREDENTIALS_FILE: "/nonexistent/users"}, "a readable file"),
        ({contract.ENV_DASHBOARD_OPERATORS: "alice"}, "each user's role is in the credential file"),
        ({contract.ENV_DASHBOARD_USER_HEADER: "X-Forwarded-User"}, "only KILLSAFE_DASHBOARD_AUTH=trusted-header"),
        (
            {contract.ENV_DASHBOARD_AUTH: "trusted-header", contract.ENV_DASHBOARD_CREDENTIALS_FILE: ""},
            "X-Forwarded-User",
        ),
        (
            {contract.ENV_DASHBOARD_AUTH: "trusted-header", contract.ENV_DASHBOARD_USER_HEADER: "X-Forwarded-User"},
            "with trusted-header the proxy authenticates",
        ),
        ({contract.ENV_DASHBOARD_BIND: "localhost"}, "comma-separated IP addresses"),
        ({contract.ENV_DASHBOARD_TRUSTED_PROXIES: "everyone"}, "comma-separated CIDRs"),
        ({contract.ENV_DASHBOARD_RETRIES_PER_MINUTE: "0"}, contract.ENV_DASHBOARD_RETRIES_PER_MINUTE),
        ({contract.ENV_KEY_PREFIX: "a:b"}, contract.ENV_KEY_PREFIX),
    ],
)
def test_an_invalid_configuration_is_refused_naming_the_variable(
    dashboards: DashboardFactory, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        authenticator_for(load_dashboard_settings(dashboards.environment(env)))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_dashboard_does_not_start_without_authentication(dashboards: DashboardFactory) -> None:
    result = dashboards.run({contract.ENV_DASHBOARD_AUTH: ""})
    assert result.returncode == contract.EXIT_USAGE, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("killsafe-dashboard: invalid KILLSAFE_DASHBOARD_AUTH=''")


def test_a_credential_file_with_a_plain_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    bad = tmp_path / "users"
    bad.write_text("# users\nalice:operator:hunter2-plain\n")
    with pytest.raises(SettingsError) as refused:
        parse_credentials(bad.read_text(), str(bad))
    assert f"{bad} line 2" in str(refused.value) and "never a plain password" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    for text, expected in (
        ("alice:admin:$argon2id$x\n", "a role of viewer or operator"),
        ("al ice:viewer:$argon2id$x\n", "with a name of"),
        ("a:viewer:$argon2id$x\na:operator:$argon2id$y\n", "each user listed once"),
        ("# nobody\n", "at least one name:role:hash line"),
    ):
        with pytest.raises(SettingsError, match=re.escape(expected)):
            parse_credentials(text, "users")


def test_a_changed_credential_file_takes_effect_without_a_restart(dashboards: DashboardFactory, tmp_path: Path) -> None:
    users = write_credentials(tmp_path / "users", {"alice": USERS["alice"]})
    dashboard = dashboards.start({contract.ENV_DASHBOARD_CREDENTIALS_FILE: str(users)})
    assert dashboard.get("/").status == 200
    write_credentials(users, {"alice": ("viewer", "a-brand-new-password")})

    wait_for(lambda: dashboard.get("/").status == 401, 20, "the old password to stop working", 0.5)
    page = dashboard.get("/", password="a-brand-new-password")
    assert page.status == 200 and "Signed in as <strong>alice</strong> · viewer" in page.body


def test_trusted_header_mode_believes_only_the_configured_header_from_a_trusted_address(
    stack: Stack, dashboards: DashboardFactory
) -> None:
    proxy_env = {
        contract.ENV_DASHBOARD_AUTH: "trusted-header",
        contract.ENV_DASHBOARD_CREDENTIALS_FILE: "",
        contract.ENV_DASHBOARD_USER_HEADER: "X-Forwarded-User",
        contract.ENV_DASHBOARD_GROUPS_HEADER: "X-Forwarded-Groups",
        contract.ENV_DASHBOARD_OPERATORS: "group:sre,dave@example.invalid",
    }
    behind_proxy = dashboards.start(proxy_env)
    stack.fail(("send_email", "proxy-1", {}))

    def who(headers: dict[str, str]) -> tuple[int, str]:
        answer = behind_proxy.get("/", user=None, headers=headers)
        found = re.search(r"Signed in as <strong>(.*?)</strong> · (\w+)", answer.body)
        return answer.status, f"{found.group(1)} {found.group(2)}" if found else ""

    assert who({"X-Forwarded-User": "erin@example.invalid", "X-Forwarded-Groups": "dev, sre"}) == (
        200,
        "erin@example.invalid operator",
    )
    assert who({"X-Forwarded-User": "dave@example.invalid"}) == (200, "dave@example.invalid operator")
    assert who({"X-Forwarded-User": "frank@example.invalid", "X-Forwarded-Groups": "dev"}) == (
        200,
        "frank@example.invalid viewer",
    )
    assert who({})[0] == 401
    assert who(_basic("alice", USERS["alice"][1]))[0] == 401, "basic auth is not accepted in this mode"
    assert who({"X-Forwarded-User": "has space"})[0] == 401

    path = "/queues/emails/jobs/proxy-1"
    frank = {"X-Forwarded-User": "frank@example.invalid"}
    page = behind_proxy.get(path, user=None, headers={"X-Forwarded-User": "dave@example.invalid"})
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.body)
    assert token
    refused = behind_proxy.request(
        "POST", path + "/retry", headers=frank, form={"csrf_token": token.group(1), "reason": "r"}
    )
    assert refused.status == 403
    answer = behind_proxy.request(
        "POST",
        path + "/retry",
        headers={"X-Forwarded-User": "dave@example.invalid"},
        form={"csrf_token": token.group(1), "reason": "proxy auth"},
    )
    assert answer.status == 303
    (record,) = [r for r in audit_records(stack.rds) if r["job_id"] == "proxy-1"]
    assert (record["by"], record["authenticated"]) == ("dave@example.invalid", "trusted-header")

    untrusted = dashboards.start({**proxy_env, contract.ENV_DASHBOARD_TRUSTED_PROXIES: "10.0.0.0/8"})
    assert untrusted.get("/", user=None, headers={"X-Forwarded-User": "dave@example.invalid"}).status == 401
    assert "identity header from an untrusted address ignored" in untrusted.log_text()


def test_the_hash_password_command_prints_a_line_the_dashboard_accepts() -> None:
    from tests.dashboard.conftest import DASHBOARD_BIN

    result = subprocess.run(
        [str(DASHBOARD_BIN), "hash-password", "--user", "ops@example.invalid", "--role", "operator"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("ops@example.invalid:operator:$argon2id$") and "a long enough password" not in line
    assert parse_credentials(line, "the line")["ops@example.invalid"].role == "operator"
    with pytest.raises(ValueError, match="at least 12 characters"):
        hash_password_line("x", "viewer", "short")
    with pytest.raises(ValueError, match="--user"):
        hash_password_line("not a name", "viewer", "long enough password")
