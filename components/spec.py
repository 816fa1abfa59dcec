"""The workload description: one validated, immutable model that every target is built from.

Unknown keys are rejected (`extra="forbid"`), models are frozen, and every constraint that can be
checked without a target is checked here so builders never see an impossible workload.
Target-specific limits (Fargate's 120 s stop timeout, which Redis modes a target offers) are
checked on `StackConfig`, which knows the target.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from killsafe import contract

Target = Literal["kubernetes", "ecs", "systemd"]
TARGETS: tuple[Target, ...] = ("kubernetes", "ecs", "systemd")

FARGATE_MAX_STOP_TIMEOUT_SECONDS = 120
"""ECS Fargate refuses a container stopTimeout above 120 s."""

NAME_MAX_LENGTH = 40
"""Children append suffixes such as `-worker` or `-redis-headless`; 40 keeps them under 63."""

DnsLabel = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=NAME_MAX_LENGTH),
]
QueueName = Annotated[str, StringConstraints(pattern=contract.QUEUE_NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Command = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors and values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """An existing Secret (Kubernetes) or secret ARN (ECS) that holds the Redis URL."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Name of the existing secret", examples=["emails-redis"]
    )
    key: Annotated[str, StringConstraints(min_length=1)] = Field(
        default=contract.REDIS_URL_SECRET_KEY, description="Key inside the secret that holds the URL"
    )


class RedisSpec(Strict):
    """Where the queue's Redis comes from. In-cluster Redis is configured for queues by killsafe."""

    mode: Literal["in-cluster", "external", "elasticache", "local"] = Field(
        default="in-cluster",
        description="in-cluster (kubernetes) | external (any target, needs url_secret) | "
        "elasticache (ecs) | local (systemd)",
    )
    url_secret: SecretRef | None = Field(
        default=None, description="external mode: the existing secret holding the Redis URL"
    )
    key_prefix: Annotated[str, StringConstraints(pattern=contract.KEY_PREFIX_PATTERN)] = Field(
        default=contract.DEFAULT_KEY_PREFIX,
        description="BullMQ key prefix (Node's `prefix` option): every producer, worker, dashboard and "
        "autoscaler of these queues must use the same one",
    )
    image: Annotated[str, StringConstraints(min_length=1)] = Field(
        default="redis:7.2.5-alpine", description="in-cluster Redis image (pinned tag or digest)"
    )
    memory_mib: int = Field(default=256, ge=64, le=262_144, description="in-cluster Redis memory limit")
    cpu_millicores: int = Field(default=250, ge=10, le=64_000, description="in-cluster Redis CPU")
    storage_gib: int = Field(default=1, ge=1, le=16_384, description="in-cluster Redis AOF volume size")
    storage_class: str | None = Field(default=None, description="in-cluster PVC storageClassName")

    @model_validator(mode="after")
    def _url_secret_matches_mode(self) -> RedisSpec:
        if self.mode == "external" and self.url_secret is None:
            raise FieldError(
                ("url_secret",),
                MISSING,
                "is required with mode external; add url_secret: {name: <existing secret>, key: url}",
            )
        if self.mode != "external" and self.url_secret is not None:
            raise FieldError(
                ("url_secret",),
                self.url_secret.model_dump(),
                f"is only used with mode external (mode is {self.mode}); remove url_secret or set mode: external",
            )
        return self


class WebSpec(Strict):
    """The HTTP tier that enqueues jobs. Omit the block for a worker-only workload."""

    command: Command = Field(
        default_factory=lambda: ["killsafe-web"], examples=[["killsafe-web"]], description="web process command"
    )
    port: int = Field(default=contract.WEB_PORT, ge=1024, le=65_535, description="container port")
    replicas: int = Field(default=2, ge=0, le=1000, description="web pods/tasks")
    memory_mib: int = Field(default=256, ge=32, le=262_144, description="memory request = limit, MiB")
    cpu_millicores: int = Field(default=250, ge=10, le=64_000, description="CPU request = limit, millicores")
    max_request_seconds: int = Field(
        default=10,
        ge=5,
        le=300,
        description="longest request; in-flight requests get this long on stop (>= the web app's 5 s enqueue timeout)",
    )
    prestop_seconds: int = Field(
        default=5, ge=0, le=60, description="delay before SIGTERM so load balancers stop routing first"
    )


class WorkerSpec(Strict):
    """The queue consumers. `max_job_seconds` drives the whole shutdown budget."""

    command: Command = Field(
        default_factory=lambda: ["killsafe-worker"],
        examples=[["killsafe-worker"]],
        description="worker process command",
    )
    queues: Annotated[list[QueueName], Field(min_length=1)] = Field(
        examples=[["emails"]], description="queues the workers consume"
    )
    concurrency_per_queue: int = Field(
        default=contract.DEFAULT_CONCURRENCY,
        ge=1,
        le=1000,
        description="jobs in flight per queue in each worker process: a worker consuming N queues runs up "
        "to N x this many jobs at once (size memory_mib for that)",
    )
    replicas: int = Field(default=2, ge=1, le=1000, description="worker pods/tasks/instances")
    max_job_seconds: int = Field(ge=1, le=86_400, description="the longest a job may run", examples=[120])
    drain_margin_seconds: int = Field(
        default=15, ge=5, le=600, description="added to max_job_seconds for the platform's kill deadline"
    )
    memory_mib: int = Field(default=512, ge=32, le=262_144, description="memory request = limit, MiB")
    cpu_millicores: int = Field(default=500, ge=10, le=64_000, description="CPU request = limit, millicores")
    health_port: int = Field(
        default=contract.HEALTH_PORT, ge=1024, le=65_535, description="/readyz, /livez and /metrics port"
    )
    liveness_stall_seconds: int | None = Field(
        default=None,
        ge=30,
        le=86_400,
        description="restart when jobs wait and none was processed this long "
        f"(default: max({contract.DEFAULT_LIVENESS_STALL_SECONDS}, max_job_seconds + drain_margin_seconds))",
    )
    lock_duration_seconds: int = Field(
        default=contract.DEFAULT_LOCK_DURATION_MS // 1000,
        ge=2,
        le=600,
        description="job lock lifetime; a killed worker's job is re-run after about lock + stalled interval",
    )
    stalled_interval_seconds: int = Field(
        default=contract.DEFAULT_STALLED_INTERVAL_MS // 1000,
        ge=1,
        le=600,
        description="how often workers look for jobs whose lock expired",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "concurrency" in data:
            raise FieldError(
                ("concurrency",),
                data["concurrency"],
                "was renamed concurrency_per_queue: it applies to each queue (a worker consuming N queues "
                "runs up to N x this many jobs at once); rename the key",
            )
        return data

    @property
    def max_jobs_in_flight(self) -> int:
        """Per worker process, across all its queues."""
        return self.concurrency_per_queue * len(self.queues)

    @field_validator("queues")
    @classmethod
    def _unique_queues(cls, queues: list[str]) -> list[str]:
        duplicates = sorted({q for q in queues if queues.count(q) > 1})
        if duplicates:
            raise ValueError(f"queue {duplicates[0]!r} is listed twice; list each queue once")
        return queues

    @model_validator(mode="after")
    def _liveness_outlasts_longest_job(self) -> WorkerSpec:
        stall = self.liveness_stall_seconds
        if stall is not None and stall <= self.max_job_seconds:
            raise FieldError(
                ("liveness_stall_seconds",),
                stall,
                f"must be longer than max_job_seconds "
                f"({self.max_job_seconds}): a worker busy with its longest jobs would be restarted "
                f"mid-job; set it above {self.max_job_seconds} or remove it to use the derived default",
            )
        return self


class AlertsSpec(Strict):
    """Thresholds for the alert rules every target gets."""

    enabled: bool = Field(default=True, description="opt-out for the alert rules")
    failed_jobs_per_hour: int = Field(default=50, ge=1, description="alert when more jobs fail per hour")
    stalled_minutes: int = Field(
        default=5, ge=1, le=1440, description="alert when jobs wait and none completes for this long"
    )


class KubernetesSpec(Strict):
    """Kubernetes-only settings."""

    namespace: DnsLabel = Field(default="default", description="namespace for every object")
    network_policies: bool = Field(default=True, description="opt-out for the NetworkPolicies")
    pod_disruption_budgets: bool = Field(default=True, description="opt-out for the PodDisruptionBudgets")
    create_namespace: bool = Field(
        default=True,
        description="emit the Namespace (labelled Pod Security 'restricted'); false when it is managed "
        "elsewhere. Ignored for namespace default",
    )
    monitoring_namespace: DnsLabel = Field(
        default="monitoring",
        description="namespace of the Prometheus that scrapes the metrics ports (only it may reach them)",
    )
    external_redis_ports: Annotated[list[Annotated[int, Field(ge=1, le=65_535)]], Field(min_length=1)] = Field(
        default_factory=lambda: [contract.REDIS_PORT],
        description="redis mode external: TCP ports the NetworkPolicies let web and worker reach "
        "(the address is unknown, so any address on these ports)",
    )


class EcsSpec(Strict):
    """ECS Fargate-only settings."""


class SystemdSpec(Strict):
    """systemd-only settings (VMs)."""


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("is not a CIDR; write e.g. 10.0.0.0/8 or fd00::/8") from None
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("is not an IP address; write e.g. 127.0.0.1 or ::1") from None
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
JobName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
DASHBOARD_MIN_MEMORY_MIB = 192
"""The dashboard idles at ~60 MiB; each Argon2 check of a password takes 64 MiB, two at a time."""


class DashboardCredentialsRef(Strict):
    """The existing secret holding the dashboard's credential file (`name:role:argon2-hash` lines)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description="a Kubernetes Secret (mounted as a file), an ECS Secrets Manager secret ARN (injected), or "
        "on systemd the path of the file on the host (LoadCredential=)",
        examples=["emails-dashboard-users"],
    )
    key: Annotated[str, StringConstraints(min_length=1)] = Field(
        default=contract.DASHBOARD_CREDENTIALS_SECRET_KEY, description="key inside the secret that holds the file"
    )


class DashboardAuthSpec(Strict):
    """Who gets in: basic auth against hashed credentials, or an auth proxy's identity header."""

    mode: Literal["basic", "trusted-header"] = Field(
        default="basic",
        description="basic (credentials_secret; each user's role in the file) | trusted-header (an auth proxy "
        "such as oauth2-proxy sets user_header; operators lists who may retry)",
    )
    credentials_secret: DashboardCredentialsRef | None = Field(
        default=None, description="basic: the secret with the credential file (`killsafe-dashboard hash-password`)"
    )
    user_header: HeaderName | None = Field(
        default=None, description="trusted-header: header with the authenticated identity, e.g. X-Forwarded-User"
    )
    groups_header: HeaderName | None = Field(
        default=None, description="trusted-header: header with the identity's groups, e.g. X-Forwarded-Groups"
    )
    operators: list[Annotated[str, StringConstraints(pattern=r"^[\x21-\x2b\x2d-\x7e]{1,256}$")]] = Field(
        default_factory=list,
        description="trusted-header: identities, or group:NAME entries, with the operator role (everyone else "
        "the proxy lets in is a viewer)",
    )
    trusted_proxies: list[Cidr] = Field(
        default_factory=lambda: list(contract.DEFAULT_DASHBOARD_TRUSTED_PROXIES),
        description="trusted-header: addresses the header is believed from (default loopback: the proxy as a sidecar)",
    )

    @model_validator(mode="after")
    def _fields_match_mode(self) -> DashboardAuthSpec:
        if self.mode == "basic":
            if self.credentials_secret is None:
                raise FieldError(
                    ("credentials_secret",),
                    MISSING,
                    "is required with mode basic (there is no default password); create a secret with lines "
                    "from `killsafe-dashboard hash-password --user NAME --role viewer|operator` and add "
                    "credentials_secret: {name: <secret>}",
                )
            for name in ("user_header", "groups_header"):
                if getattr(self, name) is not None:
                    raise FieldError(
                        (name,), getattr(self, name), "is only used with mode trusted-header; remove it or set mode"
                    )
            if self.operators:
                raise FieldError(
                    ("operators",),
                    self.operators,
                    "is only used with mode trusted-header: with basic auth each user's role is in the credential file",
                )
        else:
            if self.user_header is None:
                raise FieldError(
                    ("user_header",),
                    MISSING,
                    "is required with mode trusted-header: the header your auth proxy sets, e.g. X-Forwarded-User",
                )
            if self.credentials_secret is not None:
                raise FieldError(
                    ("credentials_secret",),
                    self.credentials_secret.model_dump(),
                    "is only used with mode basic; remove it (the proxy authenticates)",
                )
        return self


class DashboardAccessSpec(Strict):
    """Who may reach the dashboard's port on the network (nothing listed: only a port-forward or tunnel)."""

    cidrs: list[Cidr] = Field(
        default_factory=list,
        description="source addresses let in (Kubernetes NetworkPolicy ipBlock, ECS security group rule)",
    )
    kubernetes_namespaces: list[DnsLabel] = Field(
        default_factory=list,
        description="kubernetes: namespaces whose pods may connect (e.g. where oauth2-proxy or the ingress runs)",
    )
    security_group_ids: list[Annotated[str, StringConstraints(pattern=r"^sg-[0-9a-f]{8,17}$")]] = Field(
        default_factory=list, description="ecs: security groups whose members may connect (e.g. a VPN's or a proxy's)"
    )


class DashboardSpec(Strict):
    """The internal job dashboard: failed jobs with reason and stack trace, audited retries, behind auth.

    Off by default: it needs a credential killsafe must not invent (there is no default password), and
    a page that can retry payments is something to turn on deliberately. Its own process, port and
    Service / ECS service / unit, never the public web port; one replica."""

    enabled: bool = Field(default=False, description="run the dashboard (needs auth)")
    command: Command = Field(
        default_factory=lambda: [contract.DASHBOARD_COMMAND],
        examples=[[contract.DASHBOARD_COMMAND]],
        description="dashboard process command (the same image)",
    )
    port: int = Field(default=contract.DASHBOARD_PORT, ge=1024, le=65_535, description="its own, internal port")
    auth: DashboardAuthSpec | None = Field(default=None, description="required when enabled")
    never_auto_retry: list[JobName] = Field(
        default_factory=list,
        description="job names whose retry may repeat a side effect (e.g. charge): never retried in bulk, one "
        "by one only with a confirmation, here and in `killsafe-worker dlq` (KILLSAFE_NEVER_AUTO_RETRY)",
        examples=[["charge", "refund"]],
    )
    retries_per_minute: int = Field(
        default=contract.DEFAULT_DASHBOARD_RETRIES_PER_MINUTE,
        ge=1,
        le=100_000,
        description="jobs the dashboard retries per minute at most (one job or a selection)",
    )
    allowed_from: DashboardAccessSpec = Field(default_factory=DashboardAccessSpec)
    bind: list[IpAddress] | None = Field(
        default=None,
        description=f"systemd: addresses it listens on (default {' and '.join(contract.DEFAULT_DASHBOARD_VM_BIND)}); "
        "containers listen on all of the pod's/task's addresses",
    )
    memory_mib: int = Field(
        default=256, ge=DASHBOARD_MIN_MEMORY_MIB, le=262_144, description="memory request = limit, MiB"
    )
    cpu_millicores: int = Field(default=100, ge=10, le=64_000, description="CPU request = limit, millicores")

    @model_validator(mode="after")
    def _enabled_needs_auth(self) -> DashboardSpec:
        if self.enabled and self.auth is None:
            raise FieldError(
                ("auth",),
                MISSING,
                "is required when the dashboard is enabled (there is no default password); add auth: "
                "{mode: basic, credentials_secret: {name: <secret>}} or auth: {mode: trusted-header, "
                "user_header: X-Forwarded-User}",
            )
        return self


class WorkloadSpec(Strict):
    """One workload: a web tier, a worker tier and their Redis, described once for every target."""

    name: DnsLabel = Field(description="DNS-1123 label, prefix of every object name", examples=["emails"])
    image: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="one image, two commands (web and worker)", examples=["ghcr.io/acme/emails:1.4.2"]
    )
    redis: RedisSpec = Field(default_factory=RedisSpec)
    web: WebSpec | None = Field(default=None, description="omit for a worker-only workload")
    worker: WorkerSpec
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    env: dict[EnvName, str] = Field(
        default_factory=dict, description="plain, non-secret environment for web and worker"
    )
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    ecs: EcsSpec = Field(default_factory=EcsSpec)
    systemd: SystemdSpec = Field(default_factory=SystemdSpec)
    dashboard: DashboardSpec = Field(default_factory=DashboardSpec)

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, image: str) -> str:
        if re.search(r"\s", image):
            raise ValueError("an image reference has no whitespace; e.g. ghcr.io/acme/emails:1.4.2")
        if "@sha256:" in image:
            return image
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            raise ValueError(f"pin a tag or digest so every replica runs the same code, e.g. {image}:1.4.2")
        if last.endswith(":latest"):
            raise ValueError("'latest' is not a version; pin a tag or digest, e.g. ghcr.io/acme/emails:1.4.2")
        return image

    @field_validator("env")
    @classmethod
    def _no_reserved_env(cls, env: dict[str, str]) -> dict[str, str]:
        reserved = {name for name in env if name in RESERVED_ENV or name.startswith("KILLSAFE_")}
        if reserved:
            first = sorted(reserved)[0]
            raise ValueError(
                f"{first} is set by killsafe from the rest of the spec; remove it from env "
                "(Redis credentials always come from a secret)"
            )
        return env


RESERVED_ENV = frozenset({contract.ENV_REDIS_URL, contract.ENV_REDIS_URL_FILE})

REDIS_MODES_BY_TARGET: dict[str, tuple[str, ...]] = {
    "kubernetes": ("in-cluster", "external"),
    "ecs": ("elasticache", "external"),
    "systemd": ("local", "external"),
}


class StackConfig(Strict):
    """A stack file's `killsafe:` namespace: the target and the workload deployed to it."""

    target: Target = Field(default="kubernetes", description="where the workload runs")
    workload: WorkloadSpec = Field(description="the workload, described once for every target")
    render_yaml_to_directory: str | None = Field(
        default=None,
        description="kubernetes target under `pulumi up`: write manifests to this directory instead of "
        "applying them to a cluster (no cluster needed)",
    )

    @model_validator(mode="after")
    def _fits_target(self) -> StackConfig:
        allowed = REDIS_MODES_BY_TARGET[self.target]
        if self.workload.redis.mode not in allowed:
            raise FieldError(
                ("workload", "redis", "mode"),
                self.workload.redis.mode,
                f"is not available on target {self.target}; use one of {', '.join(allowed)}",
            )
        if self.target == "ecs":
            worker = self.workload.worker
            grace = worker.max_job_seconds + worker.drain_margin_seconds
            if grace > FARGATE_MAX_STOP_TIMEOUT_SECONDS:
                raise FieldError(
                    ("workload", "worker", "max_job_seconds"),
                    worker.max_job_seconds,
                    f"plus drain_margin_seconds ({worker.drain_margin_seconds}) = {grace} s exceeds "
                    f"ECS Fargate's {FARGATE_MAX_STOP_TIMEOUT_SECONDS} s stopTimeout; shorten jobs or "
                    "checkpoint them, or deploy this worker to Kubernetes",
                )
        return self


class _Missing:
    """Marks a value that is absent from the config (as opposed to null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: object = _Missing()


class FieldError(ValueError):
    """A cross-field error that names the exact field at fault, relative to the validating model."""

    def __init__(self, loc: tuple[str, ...], value: object, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value
        self.message = message
