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

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from killsafe import contract

Target = Literal["kubernetes", "ecs", "systemd"]
TARGETS: tuple[Target, ...] = ("kubernetes", "ecs", "systemd")

FARGATE_MAX_STOP_TIMEOUT_SECONDS = 120
"""ECS Fargate refuses a container stopTimeout above 120 s."""

REDIS_EXPORTER_IMAGE = "docker.io/oliver006/redis_exporter:v1.62.0"
"""Pinned: v1.62 takes the same flags as the Debian package the tests run (1.45)."""
EXPORTER_REDIS_MODES = ("in-cluster",)

NAME_MAX_LENGTH = 40
"""Children append suffixes such as `-worker` or `-redis-headless`; 40 keeps them under 63."""

DnsLabel = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=NAME_MAX_LENGTH),
]
QueueName = Annotated[str, StringConstraints(pattern=contract.QUEUE_NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Command = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=63)]
"""A Prometheus label name (also a valid Kubernetes label key without a prefix)."""
LabelValue = Annotated[str, StringConstraints(max_length=63)]
K8sLabelKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", max_length=316
    ),
]
K8sLabelValue = Annotated[
    str, StringConstraints(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", max_length=63)
]
COMMAND_MEANING = (
    "with Docker CMD semantics: the image's ENTRYPOINT (dumb-init in the reference image) runs it, so "
    "Kubernetes gets it as `args`"
)
ENTRYPOINT_MEANING = (
    "replaces the image's ENTRYPOINT (Kubernetes `command`); leave it unset so the image's init "
    "(dumb-init: signal forwarding, zombie reaping) stays PID 1"
)


DEFAULT_REDIS_IMAGE = "docker.io/library/redis:7.2.16-alpine"
"""The newest Redis 7.2 patch release (7.2 is the last BSD-licensed line; its patches carry the Lua
CVE fixes, e.g. CVE-2025-49844 in 7.2.11). Bump it with each patch release; pin a digest in stacks."""


def pinned_image(image: str, example: str) -> str:
    """An image reference every replica resolves to the same code: a tag that is not `latest`, or a digest."""
    if re.search(r"\s", image):
        raise ValueError(f"an image reference has no whitespace; e.g. {example}")
    if "@sha256:" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        tag = example.rsplit(":", 1)[-1]
        raise ValueError(f"pin a tag or digest so every replica runs the same code, e.g. {image}:{tag}")
    if last.endswith(":latest"):
        raise ValueError(f"'latest' is not a version; pin a tag or digest, e.g. {example}")
    return image


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


class RedisExporterSpec(Strict):
    """An optional redis_exporter next to the Redis killsafe runs, so the Redis alerts can fire."""

    enabled: bool = Field(
        default=False,
        description="run a redis_exporter for the Redis killsafe runs (in-cluster): RedisMemoryHigh and "
        "RedisEvictionPolicyUnsafe need it. For your own Redis, run one yourself and set "
        "alerts.redis_metrics_selector",
    )
    image: Annotated[str, StringConstraints(min_length=1)] = Field(
        default=REDIS_EXPORTER_IMAGE, description="redis_exporter image (pinned tag or digest)"
    )
    memory_mib: int = Field(default=64, ge=16, le=4096, description="exporter memory request = limit, MiB")
    cpu_millicores: int = Field(default=50, ge=10, le=4000, description="exporter CPU request = limit")


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
        default=DEFAULT_REDIS_IMAGE,
        description="in-cluster Redis image, fully qualified, pulled IfNotPresent so a Redis restart never "
        "waits on the registry; pin a digest too (image:tag@sha256:...), which is recommended",
    )
    memory_mib: int = Field(default=256, ge=64, le=262_144, description="in-cluster Redis memory limit")
    cpu_millicores: int = Field(default=250, ge=10, le=64_000, description="in-cluster Redis CPU")
    storage_gib: int = Field(default=1, ge=1, le=16_384, description="in-cluster Redis AOF volume size")
    storage_class: str | None = Field(default=None, description="in-cluster PVC storageClassName")
    exporter: RedisExporterSpec = Field(default_factory=RedisExporterSpec)

    @field_validator("image")
    @classmethod
    def _qualified_pinned_image(cls, image: str) -> str:
        pinned_image(image, DEFAULT_REDIS_IMAGE)
        first, _, rest = image.partition("/")
        if not rest or not ("." in first or ":" in first or first == "localhost"):
            name = image if rest else f"library/{image}"
            raise ValueError(
                f"is a short name, which CRI-O refuses and other runtimes resolve by their own search "
                f"list; name the registry, e.g. docker.io/{name}"
            )
        return image

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
        if self.exporter.enabled and self.mode not in EXPORTER_REDIS_MODES:
            raise FieldError(
                ("exporter", "enabled"),
                True,
                f"runs an exporter only for the Redis killsafe runs (mode {' or '.join(EXPORTER_REDIS_MODES)}), "
                f"not mode {self.mode}; run redis_exporter next to your Redis and set "
                "alerts.redis_metrics_selector to its labels (e.g. {job: redis-exporter}) instead",
            )
        return self


class WebSpec(Strict):
    """The HTTP tier that enqueues jobs. Omit the block for a worker-only workload."""

    command: Command = Field(
        default_factory=lambda: ["killsafe-web"],
        examples=[["killsafe-web"]],
        description=f"web process command, {COMMAND_MEANING}",
    )
    entrypoint: Command | None = Field(default=None, description=f"web only: {ENTRYPOINT_MEANING}")
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

    @field_validator("port")
    @classmethod
    def _not_the_metrics_port(cls, port: int) -> int:
        if port == contract.WEB_METRICS_PORT:
            raise ValueError(
                f"is the web app's own metrics port (never public); choose another port, e.g. {contract.WEB_PORT}"
            )
        return port


class AutoscalingSpec(Strict):
    """Queue autoscaling: worker count follows the jobs waiting, prioritized, delayed and active.

    Target-neutral: KEDA on Kubernetes, Application Auto Scaling on ECS. Omit the block to keep a
    fixed `replicas`.
    """

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="fewest workers; 0 scales to zero when no job is waiting, prioritized, active or delayed",
    )
    max_replicas: int = Field(ge=1, le=1000, description="most workers (mind Redis connections and cost)")
    target_backlog_per_worker: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="jobs (waiting + prioritized + active) per worker the autoscaler aims for "
        "(default: concurrency_per_queue x number of queues, what one worker runs at once)",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="the backlog must stay low this long before workers are removed (no flapping)",
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise FieldError(
                ("min_replicas",),
                self.min_replicas,
                f"is above max_replicas ({self.max_replicas}); lower min_replicas or raise max_replicas",
            )
        return self


class WorkerSpec(Strict):
    """The queue consumers. `max_job_seconds` drives the whole shutdown budget."""

    command: Command = Field(
        default_factory=lambda: ["killsafe-worker"],
        examples=[["killsafe-worker"]],
        description=f"worker process command, {COMMAND_MEANING}",
    )
    entrypoint: Command | None = Field(default=None, description=f"worker only: {ENTRYPOINT_MEANING}")
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
    memory_drain_percent: int | None = Field(
        default=None,
        ge=contract.MIN_MEMORY_DRAIN_PERCENT,
        le=contract.MEMORY_DRAIN_OFF,
        description="drain before the OOM kill: above this share of memory_mib a worker stops claiming, lets "
        f"its jobs finish and exits {contract.EXIT_MEMORY_PRESSURE} to be restarted with fresh memory; "
        f"{contract.MEMORY_DRAIN_OFF} turns it off. Default: {contract.DEFAULT_MEMORY_DRAIN_PERCENT}, lower "
        f"when memory_mib is small so {contract.MEMORY_DRAIN_HEADROOM_MIB} MiB stay free above it",
    )
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
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="omit for a fixed replica count; set to scale on the queue backlog"
    )
    max_stalled_count: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="times a job may stall (its worker killed or frozen past the lock) and still be re-run; "
        "one more fails it for good. Default: 2, or 3 when a process runs more than one job (a job that "
        "OOM-kills its worker stalls the jobs beside it). Higher re-runs more after kills; lower stops a "
        "job that crashes its worker every time sooner (each crash restarts a worker)",
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

    @property
    def target_backlog_per_worker(self) -> int:
        """The autoscaler's target: what one worker runs at once, unless the spec says otherwise."""
        autoscaling = self.autoscaling
        if autoscaling is not None and autoscaling.target_backlog_per_worker is not None:
            return autoscaling.target_backlog_per_worker
        return self.max_jobs_in_flight

    @property
    def min_workers(self) -> int:
        """Workers that must be running at any time: `replicas`, or the autoscaler's minimum."""
        return self.replicas if self.autoscaling is None else self.autoscaling.min_replicas

    @model_validator(mode="after")
    def _autoscaler_owns_replicas(self) -> WorkerSpec:
        if self.autoscaling is not None and "replicas" in self.model_fields_set:
            raise FieldError(
                ("replicas",),
                self.replicas,
                "conflicts with autoscaling: the autoscaler owns the worker count (a fixed replicas would "
                "fight it on every deploy); remove replicas and use autoscaling.min_replicas/max_replicas",
            )
        return self

    @property
    def drain_percent(self) -> int:
        """memory_drain_percent, or its default derived from memory_mib."""
        if self.memory_drain_percent is not None:
            return self.memory_drain_percent
        return contract.default_memory_drain_percent(self.memory_mib)

    @property
    def stall_limit(self) -> int:
        """max_stalled_count, or its default derived from the jobs sharing a process."""
        if self.max_stalled_count is not None:
            return self.max_stalled_count
        return contract.default_max_stalled_count(self.max_jobs_in_flight)

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
    """Thresholds for the alert rules every target gets (see README "Alerts" for each alert)."""

    enabled: bool = Field(default=True, description="opt-out for the alert rules")
    failed_jobs_per_hour: int = Field(
        default=50,
        ge=1,
        le=10_000_000,
        description="FailedJobsHigh: more job attempts than this failed in one queue in the last hour",
    )
    stalled_minutes: int = Field(
        default=5, ge=1, le=1440, description="QueueStalled: jobs wait and none completes for this long"
    )
    worker_down_minutes: int = Field(
        default=5, ge=1, le=1440, description="WorkerDown: fewer workers ready than expected for this long"
    )
    dead_letter_growing_minutes: int = Field(
        default=60,
        ge=5,
        le=10_080,
        description="DeadLetterGrowing: the failed set kept growing for this long",
    )
    interrupted_jobs_per_hour: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="JobsInterrupted: more jobs than this were handed back (drain deadline, lost lock) or "
        "lost their child process in the last hour",
    )
    timed_out_jobs_per_hour: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="JobsTimedOut: more job attempts than this were stopped at max_job_seconds in the last hour",
    )
    restarts_per_hour: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="WorkerRestarting (Kubernetes; systemd with systemd.node_exporter_port): a worker container or "
        "unit restarted more often than this in an hour",
    )
    redis_memory_percent: int = Field(
        default=80, ge=10, le=99, description="RedisMemoryHigh: Redis uses more than this share of maxmemory"
    )
    labels: dict[LabelName, LabelValue] = Field(
        default_factory=dict,
        description="extra labels on every alert, for Alertmanager routing (e.g. {team: payments})",
    )
    runbook_base_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+/$")] | None = Field(
        default=None,
        description="where the runbooks (components/observability/runbooks/) are published, ending in /; "
        "each alert then links <base><Alert>.md",
    )
    redis_metrics_selector: dict[LabelName, LabelValue] | None = Field(
        default=None,
        description="label matchers of your own redis_exporter's series (external Redis), e.g. "
        "{job: redis-exporter}; the Redis alerts are emitted when this is set or redis.exporter is enabled",
    )

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(labels) & RESERVED_ALERT_LABELS)
        if reserved:
            raise ValueError(
                f"{reserved[0]} is set by killsafe on every alert; choose another label name "
                f"(reserved: {', '.join(sorted(RESERVED_ALERT_LABELS))})"
            )
        return labels


RESERVED_ALERT_LABELS = frozenset({"alertname", "severity", "queue", "reason", "workload"})


class KedaRedisSecret(Strict):
    """An existing Secret KEDA reads an external Redis's address and password from."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Secret in the workload's namespace"
    )
    address_key: Annotated[str, StringConstraints(min_length=1)] = Field(
        default="address", description="key holding host:port (KEDA does not take a redis:// URL)"
    )
    password_key: Annotated[str, StringConstraints(min_length=1)] = Field(
        default="password", description="key holding the password"
    )
    tls: bool = Field(default=False, description="connect with TLS (rediss)")


_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?{_LABEL_NAME}$"
"""A Kubernetes label key: an optional DNS subdomain prefix and a name of up to 63 characters."""
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
Labels = dict[
    Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)],
    Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)],
]
Port = Annotated[int, Field(ge=1, le=65_535)]
AppTier = Literal["web", "worker"]
KUBERNETES_MIN_SUPPORTED = (1, 27)
"""PodDisruptionBudget unhealthyPodEvictionPolicy, topologySpread matchLabelKeys and the StatefulSet's
PVC retention policy are on by default from 1.27."""
KUBERNETES_PRESTOP_SLEEP = (1, 30)
"""The kubelet's preStop `sleep` action (the web tier's stop delay; the image has no shell) is on by
default from 1.30."""
KUBERNETES_DEFAULT_MIN_VERSION = "1.30"


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as err:
        raise ValueError(f"is not a CIDR ({err}); write e.g. 10.0.0.0/8 or 2001:db8::/32") from None


Cidr = Annotated[str, AfterValidator(_cidr)]


class NetworkPeer(Strict):
    """One source or destination for a NetworkPolicy rule: address blocks, or pods and namespaces by label.

    `cidrs` (with `except_cidrs`) excludes the selectors. `pod_labels` alone means pods in the
    workload's own namespace; with `namespace` or `namespace_labels` ({} = every namespace), those pods
    in those namespaces. List both 0.0.0.0/0 and ::/0 to mean every address on a dual-stack cluster.
    """

    cidrs: list[Cidr] = Field(default_factory=list, description="address blocks, IPv4 or IPv6")
    except_cidrs: list[Cidr] = Field(
        default_factory=list, description="blocks inside `cidrs` to leave out (e.g. the cloud metadata address)"
    )
    namespace: DnsLabel | None = Field(default=None, description="a namespace by name")
    namespace_labels: Labels | None = Field(default=None, description="namespaces by label ({} = all)")
    pod_labels: Labels | None = Field(default=None, description="pods by label")

    @model_validator(mode="after")
    def _one_kind_of_peer(self) -> NetworkPeer:
        selects = self.namespace is not None or self.namespace_labels is not None or self.pod_labels is not None
        if self.cidrs and selects:
            raise FieldError(
                ("cidrs",),
                self.cidrs,
                "cannot be combined with namespace/namespace_labels/pod_labels in one entry (a "
                "NetworkPolicy peer is either an ipBlock or selectors); make two entries",
            )
        if not self.cidrs and not selects:
            raise FieldError(
                (),
                MISSING,
                "needs cidrs or a selector (namespace, namespace_labels or pod_labels)",
            )
        if self.namespace is not None and self.namespace_labels is not None:
            raise FieldError(
                ("namespace_labels",),
                self.namespace_labels,
                "cannot be combined with namespace; use one of them",
            )
        for excluded in self.except_cidrs:
            if not any(cidr_within(excluded, block) for block in self.cidrs):
                raise FieldError(
                    ("except_cidrs",),
                    excluded,
                    f"lies outside every entry of cidrs ({', '.join(self.cidrs) or 'none'}); an except block "
                    "must be inside a cidr of the same IP family",
                )
        return self


def cidr_within(inner: str, outer: str) -> bool:
    """Whether block `inner` lies inside `outer` (False across IP families)."""
    a, b = ipaddress.ip_network(inner), ipaddress.ip_network(outer)
    return a.version == b.version and a.subnet_of(b)  # type: ignore[arg-type]


class EgressRule(NetworkPeer):
    """Extra egress for a tier beyond DNS and Redis (SMTP relays, HTTPS APIs, other services)."""

    ports: Annotated[list[Port], Field(min_length=1)] = Field(description="destination ports", examples=[[443, 587]])
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="protocol of those ports")
    tiers: Annotated[list[AppTier], Field(min_length=1)] = Field(
        default_factory=lambda: list[AppTier](["worker"]),
        description="which pods get this egress (handlers run in the worker)",
    )


class DnsSpec(Strict):
    """The cluster DNS: the only place app pods may send DNS queries to."""

    namespace: DnsLabel = Field(default="kube-system", description="namespace of the cluster DNS pods")
    pod_labels: Labels = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"},
        description="labels of the cluster DNS pods (CoreDNS keeps k8s-app: kube-dns)",
    )
    cidrs: list[Cidr] = Field(
        default_factory=list,
        description="extra DNS server addresses, e.g. NodeLocal DNSCache's 169.254.20.10/32",
    )
    port: Port = Field(default=53, description="DNS port on those pods (OpenShift's DNS pods listen on 5353)")


class KubernetesSpec(Strict):
    """Kubernetes-only settings."""

    namespace: DnsLabel = Field(default="default", description="namespace for every object")
    min_version: str = Field(
        default=KUBERNETES_DEFAULT_MIN_VERSION,
        description="oldest Kubernetes (MAJOR.MINOR) the manifests must run on: 1.30+ for the web preStop "
        "sleep; 1.27-1.29 only with web.prestop_seconds: 0 (see README, Older clusters)",
    )
    network_policies: bool = Field(default=True, description="opt-out for the NetworkPolicies")
    pod_disruption_budgets: bool = Field(default=True, description="opt-out for the PodDisruptionBudgets")
    create_namespace: bool = Field(
        default=True,
        description="emit the Namespace (labelled Pod Security 'restricted'); false when it is managed "
        "elsewhere. Ignored for namespace default",
    )
    protect_data: bool = Field(
        default=True,
        description="Pulumi: protect the Namespace and the in-cluster Redis StatefulSet, so a destroy, a "
        "namespace rename or a storage_gib change stops with an error instead of deleting the queue's "
        "volume; false for throwaway stacks (not applied with render_yaml_to_directory)",
    )
    monitoring_namespace: DnsLabel = Field(
        default="monitoring",
        description="namespace of the Prometheus that scrapes the metrics ports (only it may reach them)",
    )
    prometheus_operator: bool = Field(
        default=True,
        description="emit a PrometheusRule (the alerts) and PodMonitors; false for clusters without the "
        "Prometheus Operator's CRDs",
    )
    monitoring_labels: dict[K8sLabelKey, K8sLabelValue] = Field(
        default_factory=dict,
        description="labels your Prometheus selects PodMonitors and PrometheusRules by "
        "(e.g. {release: kube-prometheus-stack})",
    )
    grafana_dashboard: bool = Field(
        default=True, description="emit the dashboard as a ConfigMap labelled for the Grafana sidecar"
    )
    grafana_dashboard_namespace: DnsLabel | None = Field(
        default=None,
        description="namespace the Grafana sidecar watches for dashboards (default: the workload's namespace)",
    )
    keda_namespace: DnsLabel = Field(
        default="keda",
        description="worker.autoscaling: namespace of the KEDA operator, which the Redis NetworkPolicy "
        "lets reach in-cluster Redis",
    )
    keda_redis_secret: KedaRedisSecret | None = Field(
        default=None,
        description="worker.autoscaling with redis mode external: the Secret KEDA reads the Redis address "
        "and password from",
    )
    web_ingress_from: list[NetworkPeer] = Field(
        default_factory=lambda: [{"namespace": "ingress-nginx"}],
        validate_default=True,
        description="who may reach the web port (default: the ingress-nginx namespace); [] = nobody; "
        "cidrs for load balancers that send from their own addresses",
    )
    egress: list[EgressRule] = Field(
        default_factory=list,
        description="egress beyond DNS and Redis, e.g. {cidrs: [0.0.0.0/0, '::/0'], ports: [443]} (default: none)",
    )
    dns: DnsSpec = Field(default_factory=DnsSpec)
    external_redis_ports: Annotated[list[Port], Field(min_length=1)] = Field(
        default_factory=lambda: [contract.REDIS_PORT],
        description="redis mode external: TCP ports the NetworkPolicies let web and worker reach "
        "(the address is unknown, so any address on these ports)",
    )
    priority_class_name: DnsLabel | None = Field(
        default=None,
        description="PriorityClass for every pod (create it first), for clusters that preempt",
    )

    @field_validator("min_version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        version = kubernetes_version(value)
        if version < KUBERNETES_MIN_SUPPORTED:
            oldest = ".".join(map(str, KUBERNETES_MIN_SUPPORTED))
            raise ValueError(
                f"is older than {oldest}, the oldest Kubernetes killsafe supports (PodDisruptionBudget "
                "unhealthyPodEvictionPolicy, topology spread matchLabelKeys); upgrade the cluster"
            )
        return value


def kubernetes_version(value: str) -> tuple[int, int]:
    """`"1.30"` -> (1, 30); anything else is an error naming the expected form."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)", value)
    if match is None:
        raise ValueError("is not a Kubernetes MAJOR.MINOR version; write e.g. 1.30")
    return int(match.group(1)), int(match.group(2))


AwsRegion = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")]
VpcId = Annotated[str, StringConstraints(pattern=r"^vpc-[0-9a-f]{8,17}$")]
SubnetId = Annotated[str, StringConstraints(pattern=r"^subnet-[0-9a-f]{8,17}$")]
SecurityGroupId = Annotated[str, StringConstraints(pattern=r"^sg-[0-9a-f]{8,17}$")]
Arn = Annotated[
    str, StringConstraints(pattern=r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:[0-9]{0,12}:.+$", max_length=2048)
]

CLOUDWATCH_LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
"""The only values CloudWatch Logs' PutRetentionPolicy accepts (botocore's model does not list them)."""


class EcsLoadBalancerSpec(Strict):
    """Put the web service behind an existing Application Load Balancer listener."""

    listener_arn: Arn = Field(
        description="the ALB listener (usually HTTPS :443) that forwards to the web tasks; killsafe adds a rule "
        "and a target group",
        examples=[
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/edge/0123456789abcdef/0123456789abcdef"
        ],
    )
    security_group_id: SecurityGroupId = Field(
        description="the ALB's security group: the only source the web tasks accept traffic from",
        examples=["sg-0123456789abcdef0"],
    )
    priority: int = Field(default=100, ge=1, le=50_000, description="listener rule priority (unique per listener)")
    path_patterns: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=128)]], Field(min_length=1)
    ] = Field(default_factory=lambda: ["/*"], description="listener rule path patterns routed to the web tier")
    host_headers: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list, description="listener rule host names (none: any host)"
    )


class ElastiCacheSpec(Strict):
    """The ElastiCache replication group of redis mode elasticache (cluster mode disabled, for BullMQ).

    BullMQ's scripts touch several keys of a queue at once, which cluster mode would split over shards.
    """

    node_type: Annotated[str, StringConstraints(pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")] = Field(
        default="cache.t4g.small", description="node type of the primary and each replica"
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=5,
        description="read replicas; > 0 turns on automatic failover and Multi-AZ (0: a node failure loses the queue)",
    )
    engine_version: Annotated[str, StringConstraints(pattern=r"^7\.[0-9]+$")] = Field(
        default="7.1", description="Redis OSS engine version (parameter group family redis7)"
    )
    snapshot_retention_days: int = Field(default=7, ge=0, le=35, description="daily snapshots kept (0: none)")


class EcsSpec(Strict):
    """ECS Fargate-only settings."""

    region: AwsRegion | None = Field(
        default=None,
        description="AWS region of every resource (required with target ecs)",
        examples=["eu-west-1"],
    )
    cluster_arn: Arn | None = Field(
        default=None, description="run in this existing ECS cluster instead of creating one named after the workload"
    )
    container_insights: bool = Field(default=True, description="CloudWatch Container Insights on a created cluster")
    vpc_id: VpcId | None = Field(
        default=None, description="VPC of the subnets (required with target ecs)", examples=["vpc-0123456789abcdef0"]
    )
    subnets: list[SubnetId] | None = Field(
        default=None,
        description="private subnets the tasks (and ElastiCache) run in, two or more in different Availability "
        "Zones; tasks get no public IP (required with target ecs)",
        examples=[["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]],
    )
    load_balancer: EcsLoadBalancerSpec | None = Field(
        default=None, description="put the web service behind this ALB listener (omit: no load balancer)"
    )
    log_retention_days: int = Field(
        default=30, description="CloudWatch Logs retention of the tasks' log group (a value CloudWatch accepts)"
    )
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(default="X86_64", description="CPU architecture of the image")
    elasticache: ElastiCacheSpec = Field(default_factory=ElastiCacheSpec)
    external_redis_ports: Annotated[list[Annotated[int, Field(ge=1, le=65_535)]], Field(min_length=1)] = Field(
        default_factory=lambda: [contract.REDIS_PORT],
        description="redis mode external: TCP ports the tasks' security groups may reach (any address)",
    )
    secrets_kms_key_arn: Arn | None = Field(
        default=None,
        description="customer-managed KMS key of the Redis URL secret, if any (the execution role may decrypt with it)",
    )

    @field_validator("subnets")
    @classmethod
    def _some_subnets(cls, subnets: list[str] | None) -> list[str] | None:
        if subnets is None:
            return None
        if not subnets:
            raise ValueError(
                "lists no subnet; list the private subnets the tasks run in (two in different Availability Zones), "
                "e.g. subnets: [subnet-0123456789abcdef0, subnet-0fedcba9876543210]"
            )
        duplicates = sorted({s for s in subnets if subnets.count(s) > 1})
        if duplicates:
            raise ValueError(f"subnet {duplicates[0]} is listed twice; list each subnet once")
        return subnets

    @field_validator("log_retention_days")
    @classmethod
    def _known_retention(cls, days: int) -> int:
        if days not in CLOUDWATCH_LOG_RETENTION_DAYS:
            closest = min(CLOUDWATCH_LOG_RETENTION_DAYS, key=lambda allowed: (abs(allowed - days), allowed))
            raise ValueError(
                f"is not a retention CloudWatch Logs accepts; use {closest} or another of "
                f"{', '.join(str(d) for d in CLOUDWATCH_LOG_RETENTION_DAYS)}"
            )
        return days


SYSTEMD_WORKER_MIN_MEMORY_MIB = 128
"""Under MemoryMax the reference worker needs its idle RSS (~52 MiB), its jobs and the CPU sandbox child."""
SYSTEMD_WEB_MIN_MEMORY_MIB = 96
"""The reference web app (aiohttp) idles at ~45 MiB; below this MemoryMax kills it under load."""
SYSTEMD_DEFAULT_WATCHDOG_SECONDS = 30
"""The same tolerance as the Kubernetes liveness probe (3 failures x 10 s)."""

UNIT_NAME_PATTERN = (
    r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?"
    r"\.(service|socket|target|mount|automount|swap|path|timer|slice|scope|device)$"
)
"""A systemd unit name (systemd.unit(5)): name[@instance].type, at most 255 characters."""
USER_NAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def one_line(value: str) -> str:
    """Refuse what no systemd unit line or environment file can hold."""
    if "\n" in value or "\r" in value:
        raise ValueError("contains a newline; every systemd setting is one line, remove it")
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("contains a control character; remove it")
    return value


def _absolute_path(value: str) -> str:
    one_line(value)
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (starting with /)")
    if "%" in value:
        raise ValueError("contains '%', which systemd reads as a specifier (%i, %h, ...); use a path without it")
    if re.search(r"\s", value):
        raise ValueError("contains whitespace; use a path without spaces")
    return value


def _unit_name(value: str) -> str:
    one_line(value)
    if len(value) > 255 or not re.match(UNIT_NAME_PATTERN, value):
        raise ValueError(
            "is not a systemd unit name; use name.service, name@instance.service, name.target ... "
            "(letters, digits and :_.-\\ only, see systemd.unit(5))"
        )
    return value


def _user_name(value: str) -> str:
    one_line(value)
    if not re.match(USER_NAME_PATTERN, value):
        raise ValueError("is not a system user name; use lowercase letters, digits, '_' and '-', e.g. emails")
    if value == "root":
        raise ValueError("runs everything as root; use an unprivileged user, or omit user for a dynamic one")
    return value


def _login_name(value: str) -> str:
    one_line(value)
    if not re.match(USER_NAME_PATTERN, value):
        raise ValueError("is not a user name; use lowercase letters, digits, '_' and '-', e.g. deploy")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
LoginName = Annotated[str, AfterValidator(_login_name)]
UnitName = Annotated[str, AfterValidator(_unit_name)]
UserName = Annotated[str, AfterValidator(_user_name)]
BindAddress = Annotated[str, StringConstraints(pattern=r"^-?[0-9A-Fa-f:.*]+$")]


class LoadBalancerSpec(Strict):
    """A load balancer in front of the web units: taken out of it before SIGTERM, put back after start."""

    deregister_command: Command = Field(
        description="run before the web process gets SIGTERM (ExecStop=), then web.prestop_seconds pass "
        "so in-flight connections move away; e.g. a call to your load balancer's API",
        examples=[["/usr/local/bin/lb", "drain", "emails-web"]],
    )
    register_command: Command | None = Field(
        default=None,
        description="run once the web process started (ExecStartPost=); omit when the load balancer's "
        "health check on /readyz brings the host back by itself",
    )


class HostSpec(Strict):
    """A VM that SystemdWorkload installs the rendered units on over SSH."""

    address: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:-]{1,253}$")] = Field(
        description="hostname or IP address (also the scrape target's host)", examples=["10.0.1.12"]
    )
    ssh_user: LoginName = Field(default="root", description="SSH login: root, or a user that may run systemctl")
    ssh_port: int = Field(default=22, ge=1, le=65_535, description="SSH port")


class SystemdSpec(Strict):
    """systemd-only settings (VMs)."""

    hosts: list[HostSpec] = Field(
        default_factory=list,
        description="VMs `pulumi up` installs on over SSH, one after the other (render needs none; "
        "they are also the scrape targets)",
    )
    ssh_private_key_file: str | None = Field(
        default=None,
        description="pulumi up: the SSH private key file for the hosts (default: the SSH agent, SSH_AUTH_SOCK)",
    )

    venv: AbsolutePath | None = Field(
        default=None,
        description="virtualenv holding the app (killsafe-worker/killsafe-web or yours): a command that "
        "is not an absolute path runs from its bin/ (default: /opt/<name>/venv)",
    )
    config_dir: AbsolutePath | None = Field(
        default=None,
        description="where install.sh puts the environment files, redis.conf and the credentials "
        "(default: /etc/<name>)",
    )
    unit_dir: AbsolutePath = Field(default="/etc/systemd/system", description="where install.sh puts the units")
    user: UserName | None = Field(
        default=None,
        description="run web and worker as this existing system user (default: a dynamic user per unit, "
        "DynamicUser=yes, which owns nothing on disk)",
    )
    after: list[UnitName] = Field(
        default_factory=list,
        description="units web and worker start after and want (e.g. postgresql.service); stopping "
        "happens in reverse order",
        examples=[["postgresql.service"]],
    )
    watchdog_seconds: int = Field(
        default=SYSTEMD_DEFAULT_WATCHDOG_SECONDS,
        ge=2,
        le=3600,
        description="WatchdogSec of the workers: the worker pings only while live (event loop running, "
        "jobs consumed when they wait), so systemd restarts it this long after it stopped consuming",
    )
    alert_webhook_file: AbsolutePath | None = Field(
        default=None,
        description="file on the host holding a webhook URL the alert unit POSTs to when a unit fails "
        "(read as a credential, never in a unit); without it the alert is logged at priority crit",
    )
    load_balancer: LoadBalancerSpec | None = Field(
        default=None,
        description="declare the load balancer in front of the web units so a stop takes the host out of it first",
    )
    redis_bind: Annotated[list[BindAddress], Field(min_length=1)] = Field(
        default_factory=lambda: ["127.0.0.1", "-::1"],
        description="redis mode local: addresses Redis listens on (its `bind`; a leading '-' skips an "
        "address the host lacks)",
    )
    redis_port: int = Field(default=contract.REDIS_PORT, ge=1, le=65_535, description="redis mode local: port")
    redis_server: AbsolutePath = Field(
        default="/usr/bin/redis-server", description="redis mode local: the redis-server binary (Redis >= 7)"
    )
    node_exporter_port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="the port of a node_exporter on every host started with --collector.systemd "
        "--collector.systemd.enable-restarts-metrics (Debian: prometheus-node-exporter, 9100): scraped for "
        "systemd's restart count of the worker units, so WorkerRestarting is emitted (default: not run, no such alert)",
        examples=[9100],
    )


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("is not an IP address; write e.g. 127.0.0.1 or ::1") from None
    return value


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
        description="one image for every command (web, worker, job dashboard)", examples=["ghcr.io/acme/emails:1.4.2"]
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
        return pinned_image(image, "ghcr.io/acme/emails:1.4.2")

    @model_validator(mode="after")
    def _kubernetes_version_fits(self) -> WorkloadSpec:
        minimum = self.kubernetes.min_version
        if (
            self.web is not None
            and self.web.prestop_seconds > 0
            and kubernetes_version(minimum) < KUBERNETES_PRESTOP_SLEEP
        ):
            needed = ".".join(map(str, KUBERNETES_PRESTOP_SLEEP))
            raise FieldError(
                ("kubernetes", "min_version"),
                minimum,
                f"is older than {needed}, which the web tier's preStop sleep (web.prestop_seconds: "
                f"{self.web.prestop_seconds}) needs; upgrade the cluster, or set web.prestop_seconds: 0 "
                "(no stop delay: see README, Older clusters)",
            )
        return self

    @model_validator(mode="after")
    def _dashboard_has_its_own_port(self) -> WorkloadSpec:
        if self.dashboard.enabled and self.web is not None and self.dashboard.port == self.web.port:
            raise FieldError(
                ("dashboard", "port"),
                self.dashboard.port,
                "is the web port; the dashboard is internal and has its own port (default "
                f"{contract.DASHBOARD_PORT}), never the public one",
            )
        return self

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
        if self.target == "kubernetes":
            workload = self.workload
            if (
                workload.worker.autoscaling is not None
                and workload.redis.mode == "external"
                and workload.kubernetes.keda_redis_secret is None
            ):
                raise FieldError(
                    ("workload", "kubernetes", "keda_redis_secret"),
                    MISSING,
                    "is required for worker.autoscaling with redis mode external: KEDA needs the Redis address "
                    "as host:port and the password, which a redis:// URL Secret does not give it; add "
                    "keda_redis_secret: {name: <Secret with keys address and password>}",
                )
            _fits_kubernetes_dashboard(workload)
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
            _fits_ecs(self.workload)
        if self.target == "systemd":
            _fits_systemd(self.workload)
        return self


KUBERNETES_SECRET_NAME = re.compile(rf"^{_DNS_SUBDOMAIN}$")
KUBERNETES_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


def _loopback_only(cidr: str) -> bool:
    network = ipaddress.ip_network(cidr, strict=False)
    return network.network_address.is_loopback and network.broadcast_address.is_loopback


def _fits_kubernetes_dashboard(workload: WorkloadSpec) -> None:
    """The dashboard block on Kubernetes: no fields of other targets, a Secret Kubernetes can hold, and
    an auth proxy the dashboard can actually believe."""
    dashboard = workload.dashboard
    if not dashboard.enabled:
        return
    loc = ("workload", "dashboard")
    if dashboard.bind is not None:
        raise FieldError(
            (*loc, "bind"),
            dashboard.bind,
            "is for systemd; on Kubernetes the dashboard listens on every address of its pod and its "
            "NetworkPolicy (dashboard.allowed_from) decides who reaches it; remove bind",
        )
    if dashboard.allowed_from.security_group_ids:
        raise FieldError(
            (*loc, "allowed_from", "security_group_ids"),
            dashboard.allowed_from.security_group_ids,
            "is for ECS; on Kubernetes let in namespaces (allowed_from.kubernetes_namespaces) or address "
            "blocks (allowed_from.cidrs)",
        )
    auth = dashboard.auth
    secret = auth.credentials_secret if auth is not None else None
    if secret is not None:
        if len(secret.name) > 253 or not KUBERNETES_SECRET_NAME.match(secret.name):
            raise FieldError(
                (*loc, "auth", "credentials_secret", "name"),
                secret.name,
                "is not a Kubernetes Secret name (a DNS-1123 subdomain: lower-case letters, digits, '-' and "
                "'.', at most 253 characters), e.g. emails-dashboard-users",
            )
        if not KUBERNETES_SECRET_KEY.match(secret.key):
            raise FieldError(
                (*loc, "auth", "credentials_secret", "key"),
                secret.key,
                "is not a Kubernetes Secret key (letters, digits, '-', '_' and '.'), e.g. credentials",
            )
    if auth is not None and auth.mode == "trusted-header":
        access = dashboard.allowed_from
        if (access.kubernetes_namespaces or access.cidrs) and all(map(_loopback_only, auth.trusted_proxies)):
            raise FieldError(
                (*loc, "auth", "trusted_proxies"),
                auth.trusted_proxies,
                "trusts loopback only, but an auth proxy in allowed_from connects from its pod's address, so "
                "every request it forwards would get 401; list the addresses its pods connect from (your "
                "cluster's pod CIDRs, e.g. [10.244.0.0/16]) and leave loopback out, or `kubectl port-forward` "
                "users could set the identity header themselves",
            )


SECRETS_MANAGER_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$")


def _fits_ecs(workload: WorkloadSpec) -> None:
    """What ECS Fargate needs beyond the target-neutral spec; each error names its field."""
    from killsafe.ecs.fargate import NoFargateSize, cpu_units, fargate_task_size

    ecs = workload.ecs
    for required, present, example in (
        ("region", ecs.region, "eu-west-1"),
        ("vpc_id", ecs.vpc_id, "vpc-0123456789abcdef0"),
        ("subnets", ecs.subnets, "[subnet-0123456789abcdef0, subnet-0fedcba9876543210]"),
    ):
        if present is None:
            raise FieldError(
                ("workload", "ecs", required),
                MISSING,
                f"is required with target ecs; add it, e.g. {required}: {example}",
            )
    tiers: list[tuple[str, int, int]] = [("worker", workload.worker.cpu_millicores, workload.worker.memory_mib)]
    if workload.web is not None:
        tiers.insert(0, ("web", workload.web.cpu_millicores, workload.web.memory_mib))
    for tier, millicores, memory in tiers:
        try:
            fargate_task_size(cpu_units(millicores), memory)
        except NoFargateSize as err:
            field, value = ("memory_mib", memory) if "MiB" in str(err) else ("cpu_millicores", millicores)
            raise FieldError(
                ("workload", tier, field),
                value,
                f"fits no Fargate task size: {err}; lower {field} or deploy to Kubernetes",
            ) from None
    if workload.web is not None:
        from killsafe.budget import web_budget

        grace = web_budget(workload.web).kill_deadline_seconds
        if grace > FARGATE_MAX_STOP_TIMEOUT_SECONDS:
            raise FieldError(
                ("workload", "web", "max_request_seconds"),
                workload.web.max_request_seconds,
                f"plus prestop_seconds ({workload.web.prestop_seconds}) and a 5 s reserve = {grace} s exceeds "
                f"ECS Fargate's {FARGATE_MAX_STOP_TIMEOUT_SECONDS} s stopTimeout; shorten requests",
            )
    elif ecs.load_balancer is not None:
        raise FieldError(
            ("workload", "ecs", "load_balancer"),
            ecs.load_balancer.model_dump(),
            "routes to the web tier, but the workload has none; remove load_balancer or add web",
        )
    redis = workload.redis
    if redis.mode == "elasticache" and ecs.elasticache.replicas > 0 and len(ecs.subnets or ()) < 2:
        raise FieldError(
            ("workload", "ecs", "subnets"),
            ecs.subnets,
            f"is one subnet, but elasticache.replicas {ecs.elasticache.replicas} means Multi-AZ, which needs subnets "
            "in two Availability Zones; list a second subnet or set elasticache.replicas: 0",
        )
    autoscaling = workload.worker.autoscaling
    if autoscaling is not None and autoscaling.min_replicas == 0:
        raise FieldError(
            ("workload", "worker", "autoscaling", "min_replicas"),
            0,
            "cannot be 0 on target ecs: the backlog the autoscaler reads is published by the workers themselves "
            "(CloudWatch EMF), so with no task running nothing publishes it and a job enqueued then would never "
            "start a worker; set min_replicas: 1 or more (or deploy to Kubernetes, where KEDA reads Redis itself)",
        )
    if workload.dashboard.enabled:
        _fits_ecs_dashboard(workload)
    if redis.url_secret is not None and not SECRETS_MANAGER_ARN.match(redis.url_secret.name):
        raise FieldError(
            ("workload", "redis", "url_secret", "name"),
            redis.url_secret.name,
            "is not a Secrets Manager secret ARN; on target ecs give the secret's full ARN "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-AbCdEf), a JSON secret whose key "
            f"{redis.url_secret.key!r} holds the Redis URL, so only that secret is readable by the tasks",
        )


def _fits_ecs_dashboard(workload: WorkloadSpec) -> None:
    """The dashboard block as ECS reads it: a security group decides who connects, secrets are ARNs."""
    from killsafe.ecs.fargate import NoFargateSize, cpu_units, fargate_task_size

    dashboard = workload.dashboard
    loc = ("workload", "dashboard")
    if dashboard.bind is not None:
        raise FieldError(
            (*loc, "bind"),
            dashboard.bind,
            "is for systemd; on target ecs the dashboard listens on its task's own address and its security group "
            "decides who connects: remove bind and list dashboard.allowed_from.cidrs or security_group_ids",
        )
    access = dashboard.allowed_from
    if access.kubernetes_namespaces:
        raise FieldError(
            (*loc, "allowed_from", "kubernetes_namespaces"),
            access.kubernetes_namespaces,
            "are Kubernetes namespaces; on target ecs list allowed_from.cidrs or allowed_from.security_group_ids",
        )
    for index, cidr in enumerate(access.cidrs):
        if ipaddress.ip_network(cidr).prefixlen == 0:
            raise FieldError(
                (*loc, "allowed_from", "cidrs", str(index)),
                cidr,
                "admits every address; the dashboard shows job data and can retry jobs: list your VPN's or office's "
                "ranges, or the auth proxy's security group in security_group_ids",
            )
    auth = dashboard.auth
    assert auth is not None  # DashboardSpec requires it when enabled
    if auth.credentials_secret is not None and not SECRETS_MANAGER_ARN.match(auth.credentials_secret.name):
        raise FieldError(
            (*loc, "auth", "credentials_secret", "name"),
            auth.credentials_secret.name,
            "is not a Secrets Manager secret ARN; on target ecs give the secret's full ARN "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-AbCdEf), a JSON secret whose key "
            f"{auth.credentials_secret.key!r} holds the credential file, so only that secret is readable",
        )
    if auth.mode == "trusted-header" and set(auth.trusted_proxies) <= set(contract.DEFAULT_DASHBOARD_TRUSTED_PROXIES):
        raise FieldError(
            (*loc, "auth", "trusted_proxies"),
            auth.trusted_proxies,
            "is loopback only, but on target ecs no proxy runs inside the dashboard's task; list the CIDRs your "
            "auth proxy connects from (its subnets), so the identity header is believed from it alone",
        )
    try:
        fargate_task_size(cpu_units(dashboard.cpu_millicores), dashboard.memory_mib)
    except NoFargateSize as err:
        field, value = (
            ("memory_mib", dashboard.memory_mib) if "MiB" in str(err) else ("cpu_millicores", dashboard.cpu_millicores)
        )
        raise FieldError((*loc, field), value, f"fits no Fargate task size: {err}; lower {field}") from None


def _fits_systemd(workload: WorkloadSpec) -> None:
    """What a VM needs beyond the spec's own rules: MemoryMax the processes survive, a health port per
    worker instance, and values a unit file or environment file can hold (one line each)."""
    worker, web = workload.worker, workload.web
    if worker.memory_mib < SYSTEMD_WORKER_MIN_MEMORY_MIB:
        raise FieldError(
            ("workload", "worker", "memory_mib"),
            worker.memory_mib,
            f"is below the {SYSTEMD_WORKER_MIN_MEMORY_MIB} MiB the worker needs under systemd's MemoryMax "
            "(idle RSS ~52 MiB, plus its jobs and the CPU sandbox); raise it to at least "
            f"{SYSTEMD_WORKER_MIN_MEMORY_MIB}",
        )
    if web is not None and web.memory_mib < SYSTEMD_WEB_MIN_MEMORY_MIB:
        raise FieldError(
            ("workload", "web", "memory_mib"),
            web.memory_mib,
            f"is below the {SYSTEMD_WEB_MIN_MEMORY_MIB} MiB the web app needs under systemd's MemoryMax; "
            f"raise it to at least {SYSTEMD_WEB_MIN_MEMORY_MIB}",
        )
    ports = range(worker.health_port, worker.health_port + worker.replicas + 1)  # + the rollout's surge instance
    if ports[-1] > 65_535:
        raise FieldError(
            ("workload", "worker", "replicas"),
            worker.replicas,
            f"instances get health ports {ports[0]}-{ports[-1]}, past 65535; lower worker.health_port or replicas",
        )
    taken = {"web.port": web.port if web is not None else None}
    if web is not None:
        taken["the web's metrics port"] = contract.WEB_METRICS_PORT
    if workload.redis.mode == "local":
        taken["systemd.redis_port"] = workload.systemd.redis_port
    taken["systemd.node_exporter_port"] = workload.systemd.node_exporter_port
    if workload.dashboard.enabled:
        taken["dashboard.port"] = workload.dashboard.port
    for owner, port in taken.items():
        if port is not None and port in ports:
            raise FieldError(
                ("workload", "worker", "replicas"),
                worker.replicas,
                f"instances get health ports {ports[0]}-{ports[-1]} (one per instance and one for the "
                f"rollout's surge instance, from worker.health_port), which include {owner} {port}; move one of them",
            )
    commands: list[tuple[tuple[str, ...], list[str]]] = [(("worker", "command"), worker.command)]
    if web is not None:
        commands.append((("web", "command"), web.command))
    if workload.dashboard.enabled:
        commands.append((("dashboard", "command"), workload.dashboard.command))
        _fits_systemd_dashboard(workload, {k: v for k, v in taken.items() if k != "dashboard.port"})
    balancer = workload.systemd.load_balancer
    if balancer is not None:
        commands.append((("systemd", "load_balancer", "deregister_command"), balancer.deregister_command))
        if balancer.register_command is not None:
            commands.append((("systemd", "load_balancer", "register_command"), balancer.register_command))
    for loc, command in commands:
        for index, argument in enumerate(command):
            _one_line_field(("workload", *loc, str(index)), argument)
        if "/" in command[0] and not command[0].startswith("/"):
            raise FieldError(
                ("workload", *loc, "0"),
                command[0],
                "is a relative path; use a program name (run from systemd.venv's bin/) or an absolute path",
            )
    for name, value in workload.env.items():
        _one_line_field(("workload", "env", name), value)
    url_secret = workload.redis.url_secret
    if url_secret is not None:
        try:
            _absolute_path(url_secret.name)
        except ValueError as err:
            raise FieldError(
                ("workload", "redis", "url_secret", "name"),
                url_secret.name,
                f"on systemd names the file on each host holding the Redis URL (a credential), and {err}",
            ) from None


def _fits_systemd_dashboard(workload: WorkloadSpec, taken: dict[str, int | None]) -> None:
    """The dashboard on a VM: its own port, the users file a path on the host, and no network rule of
    another target (dashboard.bind decides who can connect)."""
    dashboard = workload.dashboard
    loc = ("workload", "dashboard")
    for owner, port in taken.items():
        if port is not None and port == dashboard.port:
            raise FieldError(
                (*loc, "port"), dashboard.port, f"is also {owner}; the dashboard needs a port of its own on each host"
            )
    access = dashboard.allowed_from
    for field_name in ("cidrs", "kubernetes_namespaces", "security_group_ids"):
        if getattr(access, field_name):
            raise FieldError(
                (*loc, "allowed_from", field_name),
                getattr(access, field_name),
                "is for Kubernetes or ECS; on systemd the dashboard listens on dashboard.bind only (default "
                f"{', '.join(contract.DEFAULT_DASHBOARD_VM_BIND)}: reach it through an SSH tunnel or a proxy on the "
                "host); remove allowed_from and list the host's addresses in bind, with your firewall in front",
            )
    auth = dashboard.auth
    secret = auth.credentials_secret if auth is not None else None
    if secret is not None:
        try:
            _absolute_path(secret.name)
        except ValueError as err:
            raise FieldError(
                (*loc, "auth", "credentials_secret", "name"),
                secret.name,
                "on systemd names the file on each host with the users (LoadCredential=), e.g. "
                f"/etc/{workload.name}/dashboard-users, and {err}",
            ) from None


def _one_line_field(loc: tuple[str, ...], value: str) -> None:
    try:
        one_line(value)
    except ValueError as err:
        raise FieldError(loc, value, str(err)) from None


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
