"""The dashboard's HTTP application: server-rendered pages (jinja2, autoescaped), no JavaScript.

Every request but the two probes is authenticated (401 otherwise, and nothing changes); every POST also
needs the CSRF token of the page it came from and a same-origin Origin; only operators may retry. Job
data, failure reasons and stack traces are attacker-controlled text: the templates escape everything,
and the Content-Security-Policy allows no script at all, so even a missed escape could not run one.
Retries go through `killsafe_worker.dlq` (the CLI's own code path: full attempts again, the audit
record appended after the retry), with the signed-in name, the reason typed and how they signed in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import jinja2
import redis.asyncio as aredis
from aiohttp import web
from bullmq import Queue
from multidict import MultiDictProxy
from redis.exceptions import RedisError

from killsafe_worker import contract, dlq, queue_counts
from killsafe_worker.dashboard import reads
from killsafe_worker.dashboard.auth import Authenticator, Identity, authenticator_for
from killsafe_worker.dashboard.csrf import FIELD as CSRF_FIELD
from killsafe_worker.dashboard.csrf import CsrfTokens
from killsafe_worker.dashboard.ratelimit import RetryBudget
from killsafe_worker.dashboard.settings import DashboardSettings
from killsafe_worker.notify import SystemdNotifier
from killsafe_worker.web import AccessLogger

log = logging.getLogger("killsafe.dashboard")

PER_PAGE: Final = 50
SELECTION_LIMIT: Final = 100
"""At most this many jobs in one selection retry (and its preview)."""
AUDIT_PAGE: Final = 100
JOB_HISTORY_LIMIT: Final = 50
AUDIT_SCAN_LIMIT: Final = 10_000
"""Audit records a job page looks through for that job's history (newest first)."""
MAX_REASON_CHARS: Final = 500
MAX_QUERY_CHARS: Final = 200
MAX_FORM_BYTES: Final = 64 * 1024
REDIS_TIMEOUT_SECONDS: Final = 10.0
AUDIT_ID: Final = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
NOTICES: Final = {"retried": "Retried: the job is waiting again with its full attempts, and the retry is audited."}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: Chromium then sends `Origin: null` on our own forms
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
"""On every answer, errors and 401s included; no-store because job data may be personal."""
UNAUTHENTICATED_PATHS: Final = frozenset({contract.LIVE_PATH, contract.READY_PATH})


@dataclass
class DashboardState:
    settings: DashboardSettings
    redis: aredis.Redis
    queues: dict[str, Queue]
    keys: dict[str, dict[str, str]]
    auth: Authenticator
    csrf: CsrfTokens
    budget: RetryBudget
    templates: jinja2.Environment


STATE: Final = web.AppKey("killsafe_dashboard", DashboardState)
AUTH: Final = web.AppKey("killsafe_dashboard_auth", Authenticator)


def _when(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _count(value: int | None) -> str:
    return "not recorded" if value is None else f"{value:,}"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("killsafe_worker.dashboard", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["count"] = _count
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env


def _identity(request: web.Request) -> Identity:
    identity = request.get("identity")
    assert isinstance(identity, Identity)
    return identity


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    state = request.app[STATE]
    identity = request.get("identity")
    page = state.templates.get_template(template).render(
        identity=identity,
        csrf_field=CSRF_FIELD,
        csrf_token=state.csrf.issue(identity.name) if isinstance(identity, Identity) else "",
        queue_names=list(state.queues),
        never_auto_retry=sorted(state.settings.never_auto_retry),
        never_env=contract.ENV_NEVER_AUTO_RETRY,
        **context,
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def secure_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Secure headers on every answer; HTTP errors and Redis trouble become escaped HTML pages."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response = render(request, "error.html", status=exc.status, title=exc.reason, message=exc.text or "")
        for name in ("WWW-Authenticate", "Retry-After", "Allow"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except (RedisError, OSError, TimeoutError) as err:
        log.warning("redis error", extra={"path": request.path, "error": repr(err)})
        response = render(
            request, "error.html", status=503, title="Redis unavailable", message=f"{type(err).__name__}: {err}"
        )
        response.headers["Retry-After"] = "5"
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 before any handler runs, so an unauthenticated request reads and changes nothing."""
    if request.path in UNAUTHENTICATED_PATHS:
        return await handler(request)
    auth = request.app[AUTH]
    identity = await auth.authenticate(request)
    if identity is None:
        state = request.app[STATE]
        headers = {}
        if state.settings.auth_mode == "basic":
            headers["WWW-Authenticate"] = 'Basic realm="killsafe dashboard", charset="UTF-8"'
            message = "Sign in with your dashboard user name and password."
        else:
            message = "Sign in through the auth proxy in front of the dashboard."
        raise web.HTTPUnauthorized(text=message, headers=headers)
    request["identity"] = identity
    return await handler(request)


def _queue(request: web.Request) -> tuple[str, Queue, dict[str, str]]:
    state = request.app[STATE]
    name = request.match_info["queue"]
    queue = state.queues.get(name)
    if queue is None:
        raise web.HTTPNotFound(text=f"no queue {name!r} here; this dashboard shows {', '.join(state.queues)}")
    return name, queue, state.keys[name]


def _int_query(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    return int(raw) if raw.isdigit() and len(raw) < 10 else 0


def _search_query(request: web.Request) -> str:
    return request.query.get("q", "").strip()[:MAX_QUERY_CHARS]


async def _checked_form(request: web.Request) -> MultiDictProxy[Any]:
    """The POSTed form, only if it comes from our own page (same origin, valid CSRF token); else 403.

    The token is the protection; Sec-Fetch-Site and Origin, which browsers send on form posts, refuse
    another site's (or a sibling subdomain's) form before the token is even read. `Origin: null`
    (a privacy-restricted context) and no header at all (a script with the token) rely on the token."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if (fetch_site is not None and fetch_site not in ("same-origin", "none")) or (
        origin not in (None, "null") and urlsplit(origin).netloc != request.host
    ):
        raise web.HTTPForbidden(text="cross-site request refused: submit the form from the dashboard itself")
    form = await request.post()
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not request.app[STATE].csrf.valid(token, _identity(request).name):
        raise web.HTTPForbidden(text="missing or expired CSRF token: reload the page and submit the form again")
    return form


def _require_operator(request: web.Request) -> Identity:
    identity = _identity(request)
    if not identity.can_retry:
        raise web.HTTPForbidden(
            text=f"{identity.name} is a viewer: viewers see everything and change nothing; ask an operator"
        )
    return identity


def _reason(form: Mapping[str, Any]) -> str:
    reason = form.get("reason")
    text = " ".join(reason.split()) if isinstance(reason, str) else ""
    return text[:MAX_REASON_CHARS]


def _operator(identity: Identity, reason: str) -> dlq.Operator:
    return dlq.Operator(
        by=identity.name,
        reason=reason,
        os_user=dlq.os_user(),
        host=socket.gethostname(),
        authenticated=identity.via,
    )


async def overview_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = await asyncio.wait_for(
        reads.overview(state.redis, state.settings.key_prefix, list(state.queues)), REDIS_TIMEOUT_SECONDS
    )
    return render(
        request,
        "overview.html",
        title="Overview",
        overview=data,
        states=[*contract.QUEUE_STATES, "completed"],
        eviction_safe=data.eviction_policy in contract.SAFE_MAXMEMORY_POLICIES,
    )


async def failed_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name, _, keys = _queue(request)
    query = _search_query(request)
    if query:
        cursor = _int_query(request, "cursor")
        result = await reads.search_failed(state.redis, keys, query, cursor=cursor, limit=PER_PAGE)
        return render(request, "failed.html", title=f"Failed jobs in {name}", queue=name, query=query, search=result)
    page = _int_query(request, "page")
    listing = await reads.failed_page(state.redis, keys, page, PER_PAGE)
    return render(
        request,
        "failed.html",
        title=f"Failed jobs in {name}",
        queue=name,
        query="",
        listing=listing,
        page=page,
        has_next=listing.start + PER_PAGE < listing.total,
    )


async def _job_context(request: web.Request) -> dict[str, Any]:
    state = request.app[STATE]
    name, _, keys = _queue(request)
    job_id = request.match_info["job_id"]
    job = await reads.job_view(state.redis, keys, job_id)
    if job is None:
        raise web.HTTPNotFound(text=f"no job {job_id!r} in queue {name} (removed, or never existed)")
    history = await dlq.read_audit(
        state.redis, JOB_HISTORY_LIMIT, queue_filter=name, job_id=job_id, max_scanned=AUDIT_SCAN_LIMIT
    )
    return {
        "title": f"Job {job.id}",
        "queue": name,
        "job": job,
        "history": history,
        "history_scan_limit": AUDIT_SCAN_LIMIT,
        "never": job.name in state.settings.never_auto_retry,
        "refresh": job.state in ("waiting", "active", "delayed", "prioritized"),
        "notice": None,
        "error": None,
        "reason": "",
    }


async def job_page(request: web.Request) -> web.Response:
    context = await _job_context(request)
    notice = NOTICES.get(request.query.get("notice", ""))
    audit_id = request.query.get("audit", "")
    if notice and AUDIT_ID.match(audit_id):
        notice = f"{notice} Audit entry {audit_id}."
    context["notice"] = notice
    return render(request, "job.html", **context)


async def _job_error(request: web.Request, status: int, error: str, reason: str) -> web.Response:
    context = await _job_context(request)
    context.update(error=error, reason=reason)
    return render(request, "job.html", status=status, **context)


async def retry_job(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    identity = _require_operator(request)
    form = await _checked_form(request)
    name, queue, _ = _queue(request)
    job_id = request.match_info["job_id"]
    reason = _reason(form)
    if not reason:
        return await _job_error(request, 400, "Say why you retry it: the reason goes into the audit trail.", reason)
    wait = state.budget.seconds_until_available()
    if wait > 0:
        response = await _job_error(
            request,
            429,
            f"Retry budget spent ({state.settings.retries_per_minute} jobs a minute): try again in {wait:.0f} s.",
            reason,
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    confirmed = form.get("confirm") == "yes"
    try:
        job = await dlq.load_job(queue, state.redis, job_id)
        dlq.check_retryable(job, state.settings.never_auto_retry, confirmed, "tick the confirmation box")
        entry = await dlq.retry_and_audit(
            queue, state.redis, job, _operator(identity, reason), command="dashboard retry", confirmed=confirmed
        )
    except dlq.Refused as err:
        return await _job_error(request, 409, str(err), reason)
    except dlq.UnauditedRetry as err:
        log.error("retry not audited", extra={"queue": name, "jobId": job_id, "by": identity.name})
        raise web.HTTPInternalServerError(text=str(err)) from err
    state.budget.spend(1)
    log.info("job retried", extra={"queue": name, "jobId": job_id, "by": identity.name, "auditId": entry})
    location = f"/queues/{quote(name)}/jobs/{quote(job_id, safe='')}?" + urlencode(
        {"notice": "retried", "audit": entry}
    )
    raise web.HTTPSeeOther(location)


async def _selection(request: web.Request, keys: dict[str, str], query: str) -> list[reads.FailedSummary]:
    """The failed jobs a selection retry would consider: the search's matches among the newest
    reads.SEARCH_SCAN_LIMIT failed jobs, or the newest ones. Retried jobs leave the failed set, so
    preview-and-retry again walks on through older ones, SELECTION_LIMIT at a time."""
    state = request.app[STATE]
    if query:
        result = await reads.search_failed(state.redis, keys, query, limit=SELECTION_LIMIT)
        return result.jobs
    return (await reads.failed_page(state.redis, keys, 0, SELECTION_LIMIT)).jobs


async def selection_preview(request: web.Request) -> web.Response:
    """The dry run: what a selection retry would do; reads only."""
    state = request.app[STATE]
    name, _, keys = _queue(request)
    query = _search_query(request)
    jobs = await _selection(request, keys, query)
    never = state.settings.never_auto_retry
    return render(
        request,
        "selection.html",
        title=f"Retry a selection of {name}",
        queue=name,
        query=query,
        would_retry=[job for job in jobs if job.name not in never],
        skipped=[job for job in jobs if job.name in never],
        limit=SELECTION_LIMIT,
        scan_limit=reads.SEARCH_SCAN_LIMIT,
        budget=state.budget.remaining(),
        per_minute=state.settings.retries_per_minute,
        result=None,
        error=None,
    )


async def selection_retry(request: web.Request) -> web.Response:
    state = request.app[STATE]
    identity = _require_operator(request)
    form = await _checked_form(request)
    name, queue, _ = _queue(request)
    job_ids = list(dict.fromkeys(str(value) for value in form.getall("job_id", [])))[:SELECTION_LIMIT]
    reason = _reason(form)
    context: dict[str, Any] = {
        "title": f"Retry a selection of {name}",
        "queue": name,
        "query": str(form.get("q", ""))[:MAX_QUERY_CHARS],
        "would_retry": [],
        "skipped": [],
        "limit": SELECTION_LIMIT,
        "scan_limit": reads.SEARCH_SCAN_LIMIT,
        "per_minute": state.settings.retries_per_minute,
        "result": None,
    }
    remaining = state.budget.remaining()
    error = None
    if not reason:
        error = "Say why you retry them: the reason goes into the audit trail of every job."
    elif not job_ids:
        error = "Nothing selected."
    elif len(job_ids) > remaining:
        error = (
            f"{len(job_ids)} jobs selected but only {remaining} retries are left this minute "
            f"(budget {state.settings.retries_per_minute} a minute); narrow the search or wait"
        )
    if error is not None:
        return render(
            request, "selection.html", status=400 if remaining else 429, error=error, budget=remaining, **context
        )
    retried: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    operator = _operator(identity, reason)
    for job_id in job_ids:
        try:
            job = await dlq.load_job(queue, state.redis, job_id)
            if job.name in state.settings.never_auto_retry:
                skipped.append((job_id, f"{job.name} is in {contract.ENV_NEVER_AUTO_RETRY}: retry it on its own page"))
                continue
            dlq.check_retryable(job, state.settings.never_auto_retry, False)
            entry = await dlq.retry_and_audit(
                queue, state.redis, job, operator, command="dashboard retry-selection", confirmed=False
            )
        except dlq.Refused as err:
            skipped.append((job_id, str(err)))
            continue
        state.budget.spend(1)
        retried.append((job_id, entry))
    log.info("selection retried", extra={"queue": name, "by": identity.name, "retried": len(retried)})
    return render(
        request,
        "selection.html",
        error=None,
        budget=state.budget.remaining(),
        **{**context, "result": {"retried": retried, "skipped": skipped}},
    )


async def audit_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    queue_filter = request.query.get("queue") or None
    if queue_filter is not None and queue_filter not in state.queues:
        raise web.HTTPNotFound(text=f"no queue {queue_filter!r} here")
    records = await dlq.read_audit(
        state.redis,
        AUDIT_PAGE,
        queue_filter=queue_filter,
        max_scanned=AUDIT_SCAN_LIMIT if queue_filter else None,
    )
    return render(request, "audit.html", title="Retry audit trail", records=records, queue_filter=queue_filter)


async def livez(_request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[STATE].redis.ping(), 1.0)
    except (RedisError, OSError, TimeoutError) as err:
        return web.json_response({"ready": False, "problems": [f"redis: {type(err).__name__}"]}, status=503)
    return web.json_response({"ready": True})


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(text=STYLESHEET, content_type="text/css", charset="utf-8")


def _load_stylesheet() -> str:
    from importlib.resources import files

    return (files("killsafe_worker.dashboard") / "static" / "style.css").read_text(encoding="utf-8")


STYLESHEET: Final = _load_stylesheet()


def create_app(settings: DashboardSettings, authenticator: Authenticator | None = None) -> web.Application:
    """The dashboard application; raises SettingsError when the credentials cannot be loaded."""
    app = web.Application(middlewares=[secure_headers, authenticate], client_max_size=MAX_FORM_BYTES)
    app[AUTH] = authenticator if authenticator is not None else authenticator_for(settings)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        client = dlq.redis_client(settings.redis_url, settings.redis_url_file)
        queues = {name: Queue(name, {"connection": client, "prefix": settings.key_prefix}) for name in settings.queues}
        app[STATE] = DashboardState(
            settings=settings,
            redis=client,
            queues=queues,
            keys={name: queue_counts.queue_keys(settings.key_prefix, name) for name in settings.queues},
            auth=app[AUTH],
            csrf=CsrfTokens(),
            budget=RetryBudget(settings.retries_per_minute),
            templates=templates(),
        )
        yield
        await client.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", overview_page)
    app.router.add_get("/queues/{queue}/failed", failed_page)
    app.router.add_get("/queues/{queue}/jobs/{job_id}", job_page)
    app.router.add_post("/queues/{queue}/jobs/{job_id}/retry", retry_job)
    app.router.add_get("/queues/{queue}/retry-selection", selection_preview)
    app.router.add_post("/queues/{queue}/retry-selection", selection_retry)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/static/style.css", stylesheet)
    app.router.add_get(contract.LIVE_PATH, livez)
    app.router.add_get(contract.READY_PATH, readyz)
    return app


async def serve(settings: DashboardSettings, authenticator: Authenticator | None = None) -> int:
    """Listen on the dashboard port (every address, IPv4 and IPv6, unless KILLSAFE_DASHBOARD_BIND narrows
    it) until SIGTERM/SIGINT. Under systemd (NOTIFY_SOCKET set, `Type=notify`) it sends READY=1 once
    every address listens, so `systemctl start` returns only then, and STOPPING=1 on SIGTERM."""
    app = create_app(settings, authenticator)
    runner = web.AppRunner(
        app,
        shutdown_timeout=2.0,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("killsafe.dashboard.access"),
    )
    await runner.setup()
    hosts: tuple[str | None, ...] = settings.bind or (None,)
    try:
        for host in hosts:
            await web.TCPSite(runner, host=host, port=settings.port).start()
    except OSError as err:
        log.error("cannot listen", extra={"port": settings.port, "error": str(err)})
        await runner.cleanup()
        return contract.EXIT_FAILURE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "listening",
        extra={
            "port": settings.port,
            "bind": list(settings.bind or ["*"]),
            "auth": settings.auth_mode,
            "queues": list(settings.queues),
        },
    )
    notifier = SystemdNotifier()
    notifier.notify("READY=1", f"STATUS=listening on port {settings.port} ({', '.join(settings.bind or ['*'])})")
    await stop.wait()
    notifier.notify("STOPPING=1")
    notifier.close()
    await runner.cleanup()
    log.info("stopped")
    return contract.EXIT_OK
