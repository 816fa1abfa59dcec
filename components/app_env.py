"""The environment the web and worker processes get, on every target, derived once from the spec.

Targets differ only in where the Redis URL comes from: a mounted secret file (Kubernetes, a systemd
credential) named by `REDIS_URL_FILE`, or an injected secret (ECS `secrets`) that arrives as
`REDIS_URL` without ever being written into the task definition. No secret value is ever placed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from killsafe import contract
from killsafe.budget import shutdown_budget, web_budget
from killsafe.spec import DashboardAuthSpec, WebSpec, WorkloadSpec


def shared_env(spec: WorkloadSpec, redis_url_file: str | None) -> dict[str, str]:
    """What web and worker both need: where the Redis URL is, the queues and their key prefix."""
    env: dict[str, str] = {}
    if redis_url_file is not None:
        env[contract.ENV_REDIS_URL_FILE] = redis_url_file
    env[contract.ENV_QUEUES] = ",".join(spec.worker.queues)
    env[contract.ENV_KEY_PREFIX] = spec.redis.key_prefix
    env[contract.ENV_STARTUP_TIMEOUT_SECONDS] = str(contract.DEFAULT_STARTUP_TIMEOUT_SECONDS)
    return env


def worker_env(spec: WorkloadSpec, redis_url_file: str | None) -> dict[str, str]:
    """The budget the worker enforces on itself; it must agree with the platform's kill deadline."""
    worker = spec.worker
    budget = shutdown_budget(worker)
    own = {
        **shared_env(spec, redis_url_file),
        contract.ENV_CONCURRENCY_PER_QUEUE: str(worker.concurrency_per_queue),
        contract.ENV_HEALTH_PORT: str(worker.health_port),
        contract.ENV_MAX_JOB_SECONDS: str(budget.max_job_seconds),
        contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(budget.drain_deadline_seconds),
        contract.ENV_LOCK_DURATION_MS: str(budget.lock_duration_ms),
        contract.ENV_STALLED_INTERVAL_MS: str(budget.stalled_interval_ms),
        contract.ENV_LIVENESS_STALL_SECONDS: str(budget.liveness_stall_seconds),
        contract.ENV_MAX_STALLED_COUNT: str(worker.stall_limit),
        contract.ENV_MEMORY_LIMIT_MIB: str(worker.memory_mib),
        contract.ENV_MEMORY_DRAIN_PERCENT: str(worker.drain_percent),
    }
    return with_user_env(spec, own)


def web_tier(spec: WorkloadSpec) -> WebSpec:
    if spec.web is None:
        raise ValueError(f"workload {spec.name} has no web tier; callers check spec.web first")
    return spec.web


def web_env(spec: WorkloadSpec, redis_url_file: str | None, metrics_port: int | None = None) -> dict[str, str]:
    """`metrics_port`: where the target scrapes the web's metrics (set explicitly, so the port the
    platform opens is the one the app binds); None leaves the app's default (contract.WEB_METRICS_PORT)."""
    web = web_tier(spec)
    own = {
        **shared_env(spec, redis_url_file),
        contract.ENV_WEB_PORT: str(web.port),
        **({contract.ENV_WEB_METRICS_PORT: str(metrics_port)} if metrics_port is not None else {}),
        contract.ENV_SHUTDOWN_TIMEOUT_SECONDS: str(web_budget(web).request_drain_seconds),
    }
    return with_user_env(spec, own)


def with_user_env(spec: WorkloadSpec, own: dict[str, str]) -> dict[str, str]:
    """killsafe's variables first, then the spec's plain env (sorted; reserved names are rejected
    by the spec, so nothing here is overridden)."""
    return {**own, **{name: spec.env[name] for name in sorted(spec.env)}}


def dashboard_env(
    spec: WorkloadSpec,
    redis_url_file: str | None,
    credentials_file: str | None,
    default_bind: Sequence[str] | None = None,
) -> dict[str, str]:
    """What `killsafe-dashboard` reads: the queues, how people sign in, the retry rules.

    `credentials_file` is where the target puts the basic-auth credential file (a mounted Secret, a
    systemd credential); None when the target injects its content as KILLSAFE_DASHBOARD_CREDENTIALS
    instead (ECS `secrets`), which never appears here. `default_bind` is the target's listening
    addresses when dashboard.bind is not set (systemd: contract.DEFAULT_DASHBOARD_VM_BIND; containers:
    None, every address of the pod or task).
    """
    dashboard = spec.dashboard
    auth = dashboard_auth(spec)
    own = {
        **shared_env(spec, redis_url_file),
        contract.ENV_DASHBOARD_PORT: str(dashboard.port),
        contract.ENV_DASHBOARD_AUTH: auth.mode,
        contract.ENV_DASHBOARD_RETRIES_PER_MINUTE: str(dashboard.retries_per_minute),
    }
    if dashboard.never_auto_retry:
        own[contract.ENV_NEVER_AUTO_RETRY] = ",".join(dashboard.never_auto_retry)
    bind = dashboard.bind if dashboard.bind is not None else default_bind
    if bind is not None:
        own[contract.ENV_DASHBOARD_BIND] = ",".join(bind)
    if auth.mode == "basic":
        if credentials_file is not None:
            own[contract.ENV_DASHBOARD_CREDENTIALS_FILE] = credentials_file
    else:
        assert auth.user_header is not None  # the spec requires it in this mode
        own[contract.ENV_DASHBOARD_USER_HEADER] = auth.user_header
        if auth.groups_header is not None:
            own[contract.ENV_DASHBOARD_GROUPS_HEADER] = auth.groups_header
        if auth.operators:
            own[contract.ENV_DASHBOARD_OPERATORS] = ",".join(auth.operators)
        own[contract.ENV_DASHBOARD_TRUSTED_PROXIES] = ",".join(auth.trusted_proxies)
    return with_user_env(spec, own)


def dashboard_auth(spec: WorkloadSpec) -> DashboardAuthSpec:
    if not spec.dashboard.enabled or spec.dashboard.auth is None:
        raise ValueError(f"workload {spec.name} has no dashboard; callers check spec.dashboard.enabled first")
    return spec.dashboard.auth
