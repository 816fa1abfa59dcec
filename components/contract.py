"""The worker contract: every name the deployment targets and the worker image must agree on.

Defined once, here, with no dependencies beyond the standard library. The `killsafe` builders
import it as `killsafe.contract`; the worker image ships the very same file as
`killsafe_worker.contract` (a symlink in the source tree, a copy in the wheel), so a port, a path,
an environment variable or a metric name cannot drift between what is deployed and what runs.
"""

from __future__ import annotations

from typing import Final

# --- Ports and HTTP paths -------------------------------------------------------------------------
HEALTH_PORT: Final = 8080
"""Worker health/metrics HTTP port (env KILLSAFE_HEALTH_PORT overrides)."""
WEB_PORT: Final = 8000
"""Default port of the reference web app (env KILLSAFE_WEB_PORT overrides)."""
WEB_METRICS_PORT: Final = 8001
"""The web app's METRICS_PATH, on a port of its own (env KILLSAFE_WEB_METRICS_PORT overrides; 0: off), so the
public port and whatever routes to it (Service, load balancer) never expose internals."""
REDIS_PORT: Final = 6379

READY_PATH: Final = "/readyz"
"""200 only when Redis is reachable, the worker is registered and the eviction policy is safe."""
LIVE_PATH: Final = "/livez"
"""503 when jobs wait and none was processed for the stall window, or the event loop is stuck."""
METRICS_PATH: Final = "/metrics"
"""Prometheus text exposition."""

# --- Environment variables ------------------------------------------------------------------------
ENV_REDIS_URL: Final = "REDIS_URL"
ENV_REDIS_URL_FILE: Final = "REDIS_URL_FILE"
"""Path of a file holding the Redis URL (a mounted secret/credential); preferred over REDIS_URL."""
ENV_QUEUES: Final = "KILLSAFE_QUEUES"
"""Comma-separated queue names the worker consumes; the web app enqueues to the first one."""
ENV_CONCURRENCY_PER_QUEUE: Final = "KILLSAFE_CONCURRENCY_PER_QUEUE"
"""Jobs in flight per queue: a worker consuming N queues runs up to N x this many jobs at once."""
LEGACY_ENV_CONCURRENCY: Final = "KILLSAFE_CONCURRENCY"
"""The old, ambiguous name; the worker refuses it (exit 2) and names ENV_CONCURRENCY_PER_QUEUE."""
ENV_MAX_JOB_SECONDS: Final = "KILLSAFE_MAX_JOB_SECONDS"
"""The job budget (spec worker.max_job_seconds), enforced per job by the worker: at the budget an async
handler is cancelled and a sandboxed child killed, and the attempt fails with reason `timeout`."""
ENV_MAX_STALLED_COUNT: Final = "KILLSAFE_MAX_STALLED_COUNT"
"""How often a job may stall (its worker killed or frozen past the lock) and still be re-run; one more
stall fails it for good (spec worker.max_stalled_count; default `default_max_stalled_count`)."""
ENV_KEY_PREFIX: Final = "KILLSAFE_KEY_PREFIX"
"""BullMQ's Redis key prefix (Node's `prefix` option): workers, web, DLQ tools, autoscalers agree on it."""
ENV_HEALTH_PORT: Final = "KILLSAFE_HEALTH_PORT"
ENV_WEB_PORT: Final = "KILLSAFE_WEB_PORT"
ENV_WEB_METRICS_PORT: Final = "KILLSAFE_WEB_METRICS_PORT"
ENV_SHUTDOWN_TIMEOUT_SECONDS: Final = "KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS"
"""The worker's own drain deadline after SIGTERM; always below the platform's kill deadline."""
ENV_LOCK_DURATION_MS: Final = "KILLSAFE_LOCK_DURATION_MS"
ENV_STALLED_INTERVAL_MS: Final = "KILLSAFE_STALLED_INTERVAL_MS"
ENV_LIVENESS_STALL_SECONDS: Final = "KILLSAFE_LIVENESS_STALL_SECONDS"
ENV_STARTUP_TIMEOUT_SECONDS: Final = "KILLSAFE_STARTUP_TIMEOUT_SECONDS"
"""The startup budget: how long the process may take from exec until LIVE_PATH answers (imports,
configuration, binding the health port; the worker keeps retrying a busy port this long, then exits 1).
Redis is *not* part of startup: a worker whose Redis is unreachable, at start or later, stays alive and
not ready and keeps retrying (capped back-off) for as long as it takes, and is ready within about a
second of Redis answering. So a startup probe sized from this never restarts a worker for a Redis
outage; readiness (READY_PATH) is what reports it."""
ENV_NEVER_AUTO_RETRY: Final = "KILLSAFE_NEVER_AUTO_RETRY"
"""Comma-separated job names the dead-letter workflow retries only with --confirm."""
ENV_LOG_LEVEL: Final = "KILLSAFE_LOG_LEVEL"
ENV_MEMORY_LIMIT_MIB: Final = "KILLSAFE_MEMORY_LIMIT_MIB"
"""The worker's memory limit in MiB (spec worker.memory_mib, set on every target). The worker uses the
smaller of this and its own cgroup's limit (v2 memory.max, v1 memory.limit_in_bytes); unset and no
cgroup limit: no drain before the OOM kill."""
ENV_MEMORY_DRAIN_PERCENT: Final = "KILLSAFE_MEMORY_DRAIN_PERCENT"
"""Drain before the OOM kill: above this share of the memory limit the worker stops claiming, lets
in-flight jobs finish and exits EXIT_MEMORY_PRESSURE for a fresh process (spec
worker.memory_drain_percent; default `default_memory_drain_percent`; MEMORY_DRAIN_OFF turns it off)."""
ENV_HANDLERS: Final = "KILLSAFE_HANDLERS"
"""Optional `package.module:REGISTRY` (a mapping job name -> async handler) replacing the demo handlers."""

# --- ECS: metrics as CloudWatch Embedded Metric Format, task scale-in protection -----------------
ENV_EMF_NAMESPACE: Final = "KILLSAFE_EMF_NAMESPACE"
"""Set by the ECS target (e.g. `killsafe/emails`): the worker also writes the contract metrics to stdout as
CloudWatch Embedded Metric Format lines in this namespace, which the awslogs driver turns into CloudWatch
metrics. Unset (every other target): no EMF output at all."""
EMF_INTERVAL_SECONDS: Final = 60
"""One EMF flush per worker per minute, at the middle of each wall-clock minute: a 60 s CloudWatch period then
holds exactly one sample of each worker (SampleCount = workers publishing), which alarms and scaling rely on."""
EMF_DIMENSIONS: Final = {"queue": "Queue", "state": "State", "reason": "Reason"}
"""Metric label -> EMF/CloudWatch dimension name; the metric names themselves are the contract's."""
EMF_TIER_DIMENSION: Final = "Tier"
"""Dimension of the per-process metrics (killsafe_worker_ready), value EMF_WORKER_TIER."""
EMF_WORKER_TIER: Final = "worker"
ENV_ECS_AGENT_URI: Final = "ECS_AGENT_URI"
"""Set by the ECS agent in every task (not by killsafe): the worker protects its own task from scale-in
through `${ECS_AGENT_URI}/task-protection/v1/state` while it holds jobs. Unset: no protection calls."""

# --- The job dashboard (`killsafe-dashboard`, its own process and port; never the web app's) ------
DASHBOARD_COMMAND: Final = "killsafe-dashboard"
DASHBOARD_PORT: Final = 8090
"""The dashboard's own port (env KILLSAFE_DASHBOARD_PORT overrides); internal only, never the web port.
It also serves unauthenticated LIVE_PATH and READY_PATH (Redis answers) for probes."""
ENV_DASHBOARD_PORT: Final = "KILLSAFE_DASHBOARD_PORT"
ENV_DASHBOARD_BIND: Final = "KILLSAFE_DASHBOARD_BIND"
"""Comma-separated addresses to listen on (e.g. `127.0.0.1,::1` on a VM); unset: every address, IPv4 and IPv6."""
ENV_DASHBOARD_AUTH: Final = "KILLSAFE_DASHBOARD_AUTH"
"""Required: `basic` (hashed credential file) or `trusted-header` (an auth proxy); nothing else starts it."""
ENV_DASHBOARD_CREDENTIALS_FILE: Final = "KILLSAFE_DASHBOARD_CREDENTIALS_FILE"
"""basic: path of the credential file (a mounted Secret / systemd credential), one `name:role:argon2-hash`
per line (`killsafe-dashboard hash-password` prints one); re-read when it changes."""
ENV_DASHBOARD_CREDENTIALS: Final = "KILLSAFE_DASHBOARD_CREDENTIALS"
"""basic: the same content injected as a value (ECS `secrets` from Secrets Manager); the file wins."""
ENV_DASHBOARD_USER_HEADER: Final = "KILLSAFE_DASHBOARD_USER_HEADER"
"""trusted-header: the request header carrying the authenticated identity (e.g. X-Forwarded-User)."""
ENV_DASHBOARD_GROUPS_HEADER: Final = "KILLSAFE_DASHBOARD_GROUPS_HEADER"
"""trusted-header, optional: the header with the identity's comma-separated groups (e.g. X-Forwarded-Groups)."""
ENV_DASHBOARD_OPERATORS: Final = "KILLSAFE_DASHBOARD_OPERATORS"
"""trusted-header: comma-separated identities, or `group:NAME` entries, that get the operator role;
every other identity the proxy lets through is a viewer."""
ENV_DASHBOARD_TRUSTED_PROXIES: Final = "KILLSAFE_DASHBOARD_TRUSTED_PROXIES"
"""trusted-header: comma-separated CIDRs the identity header is accepted from (default: loopback only)."""
ENV_DASHBOARD_RETRIES_PER_MINUTE: Final = "KILLSAFE_DASHBOARD_RETRIES_PER_MINUTE"
"""At most this many jobs retried through the dashboard per minute (one job or a selection)."""
DASHBOARD_AUTH_MODES: Final = ("basic", "trusted-header")
DASHBOARD_ROLES: Final = ("viewer", "operator")
"""viewer sees everything and changes nothing; operator may also retry."""
DASHBOARD_CREDENTIALS_SECRET_KEY: Final = "credentials"
"""Key, inside the dashboard's credentials Secret, that holds the credential file."""
DASHBOARD_CREDENTIALS_MOUNT_DIR: Final = "/var/run/secrets/killsafe-dashboard"
"""Where container targets mount the dashboard's credentials; KILLSAFE_DASHBOARD_CREDENTIALS_FILE points inside."""
DEFAULT_DASHBOARD_TRUSTED_PROXIES: Final = ("127.0.0.1/32", "::1/128")
DEFAULT_DASHBOARD_VM_BIND: Final = ("127.0.0.1",)
"""Where the dashboard listens on a VM (systemd) unless dashboard.bind says otherwise: loopback only, IPv4
(a `::1` in the default would stop the dashboard from starting on a host without IPv6; add it with
dashboard.bind where the host has it)."""
DEFAULT_DASHBOARD_RETRIES_PER_MINUTE: Final = 100
METRICS_MAX_DATA_POINTS: Final = 7 * 24 * 60
"""Workers keep BullMQ's per-minute completed/failed counts (`<prefix>:<queue>:metrics:*`) for a week;
the dashboard reads the last hour from them (as Node's Queue.getMetrics does)."""

# --- Defaults shared by the builders and the worker -----------------------------------------------
DEFAULT_CONCURRENCY: Final = 1
DEFAULT_LIVENESS_STALL_SECONDS: Final = 300
DEFAULT_LOCK_DURATION_MS: Final = 30_000
DEFAULT_STALLED_INTERVAL_MS: Final = 30_000
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: Final = 25
DEFAULT_STARTUP_TIMEOUT_SECONDS: Final = 30
DEFAULT_MAX_JOB_SECONDS: Final = 15
"""The budget behind the default drain deadline (25 s = 15 s + the 15 s drain margin - 5 s reserve):
used only when KILLSAFE_MAX_JOB_SECONDS is unset (a bare `docker run`); every target sets it."""
DEFAULT_KEY_PREFIX: Final = "bull"
KEY_PREFIX_PATTERN: Final = r"^[A-Za-z0-9_.{}-]{1,64}$"
"""A BullMQ prefix: no ':' (the key separator) and no spaces; braces allow a Redis Cluster hash tag."""
DEFAULT_QUEUE: Final = "default"
"""Queue consumed (and enqueued to by the web app) when KILLSAFE_QUEUES is not set."""
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
"""Used only when neither REDIS_URL_FILE nor REDIS_URL is set (local development)."""
DEFAULT_LOG_LEVEL: Final = "INFO"
QUEUE_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""What a queue name may look like (safe inside Redis keys, metric labels and resource names)."""

# --- Secrets --------------------------------------------------------------------------------------
REDIS_URL_SECRET_KEY: Final = "url"
"""Key, inside the Redis credentials Secret, that holds the full Redis URL."""
REDIS_PASSWORD_SECRET_KEY: Final = "password"
SECRETS_MOUNT_DIR: Final = "/var/run/secrets/killsafe"
"""Where deployment targets mount the Redis credentials; REDIS_URL_FILE points inside it."""

# --- Redis keys written by the worker (outside BullMQ's own `bull:` prefix) -----------------------
IDEMPOTENCY_KEY_PREFIX: Final = "killsafe:done:"
"""SET NX markers `killsafe:done:<key prefix>:<queue>:<key>`, so a re-run after a crash repeats no side
effect. The key is job.data[IDEMPOTENCY_DATA_FIELD] when the producer sets one (one logical operation,
however many jobs carry it), else `<job id>@<job creation time, ms>`: one job instance, so a new job
that reuses an id (after Queue.obliterate(), a removal, or a retention expiry) is never skipped."""
IDEMPOTENCY_DATA_FIELD: Final = "idempotency_key"
"""job.data field holding an explicit idempotency key (the web app sets it and also uses it as the jobId)."""
DLQ_AUDIT_STREAM: Final = "killsafe:dlq:audit"
"""Redis stream holding one audit record per dead-letter retry (who, why, when, job)."""
WORKER_REGISTRY_PREFIX: Final = "killsafe:workers:"
"""Per-worker heartbeat key prefix (registration, used by readiness)."""
SIDE_EFFECTS_LIST: Final = "killsafe:side-effects"
"""Redis list the reference handlers append to only when their SET NX marker was new (tests count it)."""

# --- Redis safety ---------------------------------------------------------------------------------
SAFE_MAXMEMORY_POLICIES: Final = frozenset({"noeviction"})
"""A queue's keys must never be evicted: the worker refuses readiness under any other policy."""

# --- The web app's metrics (served on WEB_METRICS_PORT only, never on the public port) --------------
METRIC_WEB_REQUESTS: Final = "killsafe_web_requests_total"
"""Counter labelled {route, method, status}: route is the route template (`/jobs/{job_id}`), or
WEB_UNMATCHED_ROUTE for a path no route matched, so a scanner cannot create a series per URL."""
METRIC_WEB_REQUEST_DURATION: Final = "killsafe_web_request_duration_seconds"
"""Histogram labelled {route, method}: time from the request reaching the app to its answer."""
METRIC_WEB_REQUESTS_IN_FLIGHT: Final = "killsafe_web_requests_in_flight"
METRIC_WEB_JOBS_SUBMITTED: Final = "killsafe_web_jobs_submitted_total"
"""Counter labelled {queue, outcome} for outcome in WEB_JOB_OUTCOMES: what became of each POST /jobs."""
METRIC_WEB_READY: Final = "killsafe_web_ready"
"""1 while the web app's READY_PATH would answer 200 (not draining, Redis answers)."""
WEB_UNMATCHED_ROUTE: Final = "unmatched"
WEB_JOB_OUTCOMES: Final = ("enqueued", "duplicate", "conflict", "invalid", "draining", "redis_unavailable")
"""enqueued: 202, a new job; duplicate: 200, the idempotency key's job already existed with the same payload;
conflict: 409, the key was used for another job; invalid: 400/413, not a job; draining: 503, shutting down;
redis_unavailable: 503, the add failed or timed out (it may or may not have reached Redis)."""

# --- Metric names (one contract for dashboards, alerts and autoscaling on every target) -----------
METRIC_JOBS_COMPLETED: Final = "killsafe_jobs_completed_total"
METRIC_JOBS_FAILED: Final = "killsafe_jobs_failed_total"
METRIC_JOB_DURATION: Final = "killsafe_job_duration_seconds"
METRIC_QUEUE_JOBS: Final = "killsafe_queue_jobs"
"""Gauge labelled {queue, state} for state in QUEUE_STATES, sampled periodically."""
METRIC_JOBS_INTERRUPTED: Final = "killsafe_jobs_interrupted_total"
"""Counter labelled {queue, reason} for reason in INTERRUPT_REASONS."""
METRIC_LAST_JOB_COMPLETED: Final = "killsafe_last_job_completed_timestamp_seconds"
METRIC_JOBS_TIMED_OUT: Final = "killsafe_jobs_timed_out_total"
"""Counter labelled {queue}: attempts stopped at KILLSAFE_MAX_JOB_SECONDS (failed or retried with reason timeout)."""
METRIC_WORKER_READY: Final = "killsafe_worker_ready"
"""1 while /readyz would answer 200."""
METRIC_MEMORY_PRESSURE_RESTARTS: Final = "killsafe_memory_pressure_restarts_total"
"""Counter (per process, so 0 or 1): the worker passed its memory drain threshold and is draining to exit
EXIT_MEMORY_PRESSURE. Scraped during the drain; on ECS the exit's final EMF line carries it."""
METRIC_WORKER_MEMORY: Final = "killsafe_worker_memory_bytes"
"""Gauge: the worker's memory as its cgroup counts it (working set: usage minus inactive file cache),
the worker and its job children together, sampled every MEMORY_SAMPLE_SECONDS."""
METRIC_WORKER_MEMORY_LIMIT: Final = "killsafe_worker_memory_limit_bytes"
"""Gauge: the memory limit the drain threshold applies to (0 when unknown: drain off)."""

QUEUE_STATES: Final = ("waiting", "active", "delayed", "prioritized", "failed")
INTERRUPT_REASONS: Final = (
    "shutdown_deadline",
    "child_crashed",
    "child_oom",
    "lock_lost",
    "redis_oom",
    "memory_pressure",
)
"""redis_oom: a handler's Redis write was refused because Redis reached maxmemory (noeviction); the job
is handed back without using an attempt and the worker stops claiming until Redis accepts writes.
memory_pressure: the worker was draining for its memory threshold and handed the job back (drain
deadline passed, or memory reached `memory_critical_percent`) before the kernel's
OOM killer could kill it mid-job."""
TIMEOUT_REASON: Final = "timeout"
"""failedReason prefix of an attempt stopped at KILLSAFE_MAX_JOB_SECONDS (counted in METRIC_JOBS_TIMED_OUT)."""


def default_max_stalled_count(max_jobs_in_flight: int) -> int:
    """Stalls a job survives by default: two deaths of its own worker (a lost node and a kill past the
    grace period, say), plus one when jobs share a process, because a job that crashes its worker (an
    OOM kill) stalls every job running beside it. A job that kills its worker every time is failed
    after this many + 1 crashes, each costing a worker restart: the trade-off against poison jobs."""
    return 2 if max_jobs_in_flight <= 1 else 3


# --- Drain before the OOM kill -------------------------------------------------------------------
DEFAULT_MEMORY_DRAIN_PERCENT: Final = 85
MEMORY_DRAIN_HEADROOM_MIB: Final = 40
"""Room kept between the drain threshold and the limit for in-flight jobs to finish in (the same
allowance per job as `killsafe check` expects), so small workers drain earlier."""
MIN_MEMORY_DRAIN_PERCENT: Final = 50
MEMORY_DRAIN_OFF: Final = 100
"""KILLSAFE_MEMORY_DRAIN_PERCENT=100 (spec memory_drain_percent: 100): never drain; the kernel decides."""
MEMORY_SAMPLE_SECONDS: Final = 0.5
"""How often the worker reads its cgroup's memory (a few small sysfs reads)."""


def default_memory_drain_percent(limit_mib: float) -> int:
    """DEFAULT_MEMORY_DRAIN_PERCENT, lower on small workers so MEMORY_DRAIN_HEADROOM_MIB stays between
    the threshold and the limit, never below MIN_MEMORY_DRAIN_PERCENT (256 MiB -> 84, 128 MiB -> 68)."""
    if limit_mib <= 0:
        return DEFAULT_MEMORY_DRAIN_PERCENT
    headroom_percent = -(-100 * MEMORY_DRAIN_HEADROOM_MIB // int(limit_mib))  # ceil
    return max(MIN_MEMORY_DRAIN_PERCENT, min(DEFAULT_MEMORY_DRAIN_PERCENT, 100 - headroom_percent))


def memory_critical_percent(drain_percent: float) -> float:
    """Past this while draining, the worker hands its in-flight jobs back at once (no attempt used)
    instead of waiting for them: halfway from the drain threshold to the limit (85 -> 92.5)."""
    return (drain_percent + 100) / 2


# --- Shutdown -------------------------------------------------------------------------------------
STOP_SIGNAL: Final = "SIGTERM"

# --- Worker exit codes (what a supervisor sees; every non-zero one means "restart me") -------------
EXIT_OK: Final = 0
"""Drained: every in-flight job finished before the drain deadline."""
EXIT_FAILURE: Final = 1
"""Unrecoverable error: the processing loop died, the Redis user lacks a permission the worker needs
(ACL), or the health port stayed busy for the whole startup budget. A Redis outage is never one."""
EXIT_USAGE: Final = 2
"""Invalid configuration (a one-line error names the variable)."""
EXIT_DRAIN_DEADLINE: Final = 3
"""The drain deadline passed with jobs still running; they were handed back to the queue."""
EXIT_MEMORY_PRESSURE: Final = 4
"""Drained for memory: usage passed KILLSAFE_MEMORY_DRAIN_PERCENT of the limit; in-flight jobs finished
(or were handed back, counted as interrupted with reason memory_pressure). Restart me, with fresh memory,
before the kernel's OOM killer kills a job mid-flight."""
