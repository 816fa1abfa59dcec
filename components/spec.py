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

NAME_MAX_LENGTH = 40
"""Children append suffixes such as `-worker` or `-redis-headless`; 40 keeps them under 63."""

DnsLabel = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=NAME_MAX_LENGTH),
]
QueueName = Annotated[str, StringConstraints(pattern=contract.QUEUE_NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Command = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
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


class EcsSpec(Strict):
    """ECS Fargate-only settings."""


class SystemdSpec(Strict):
    """systemd-only settings (VMs)."""


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
