"""`KubernetesWorkload`: the Pulumi component that turns the pure builder's manifests into resources.

Thin on purpose (the pulumi-awsx style): every decision about *what* to deploy lives in
`killsafe.kubernetes.build`, which is tested without Pulumi. This component only

- maps each manifest to its typed `pulumi_kubernetes` resource, passing metadata/spec/data through
  untouched (camelCase keys reach the engine unchanged; tests/kubernetes/test_component_parity.py
  proves the objects created equal the manifests built),
- names and orders the children (Namespace first, then everything the pods use, then the pods),
- creates the one object a plain manifest must never hold: the in-cluster Redis credentials Secret,
  from a `RandomPassword` that is generated once and kept (secret) in the Pulumi state.

Child names: a child is named after the Kubernetes object it creates, with the workload-name prefix
swapped for the component name: component `emails` + object `emails-worker` -> `emails-worker`;
component `blue` + object `emails-worker` -> `blue-worker`; an object outside the prefix (say namespace
`prod`) -> `blue-prod`. With the usual component name (= the workload name) the Pulumi name is the
Kubernetes name. Kubernetes names are unique per kind within one namespace and Pulumi URNs include the
type, so the names are unique and stay stable across `pulumi up` as long as the objects keep theirs;
a duplicate (which would be a builder bug) fails before anything is registered. The generated
RandomPassword is named `<secret child>-password`.

Data protection: with `spec.kubernetes.protect_data` (the default) the Namespace and the in-cluster Redis
StatefulSet are `protect`ed, so `pulumi destroy`, a namespace rename or a `storage_gib` change (the
volumeClaimTemplates are immutable, so the provider would replace the StatefulSet) stops with Pulumi's
"marked for protection" error instead of deleting the queue's volume (README: Redis data).

Credential rotation: the pods that mount the generated Secret carry its checksum as a pod-template
annotation (`credentials.CREDENTIALS_HASH_ANNOTATION`), so a new password rolls them. That annotation is
the one difference from the builder's manifests (it needs the generated password).

Note for `render_yaml_to_directory` providers: pulumi-kubernetes writes Secret values to the rendered
YAML in plain text (documented provider behaviour); the manifests from the builder never hold one.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random

from killsafe import contract
from killsafe.budget import shutdown_budget, web_budget
from killsafe.kubernetes import build, credentials, labels
from killsafe.kubernetes.dashboard import dashboard_name
from killsafe.kubernetes.redis import holds_queue_data
from killsafe.kubernetes.web import web_name
from killsafe.kubernetes.worker import worker_name
from killsafe.spec import WorkloadSpec

TYPE_TOKEN = "killsafe:kubernetes:Workload"
REDIS_PASSWORD_LENGTH = 32
"""Alphanumeric only (no URL escaping needed in the Redis URL); 32 chars ~ 190 bits."""


class Stage(enum.IntEnum):
    """Creation order: every child depends on all children of the earlier stages."""

    NAMESPACE = 0
    """The Namespace: everything else lives in it."""
    SETUP = 1
    """What pods use or are governed by (identity, config, credentials, Services, policies, budgets)."""
    WORKLOAD = 2
    """Pods: start only when their ServiceAccount, config, credentials and policies exist."""


ResourceFactory = Callable[[str, dict[str, Any], pulumi.ResourceOptions], pulumi.CustomResource]


@dataclass(frozen=True)
class KindMapping:
    """How one manifest kind becomes a Pulumi resource."""

    create: ResourceFactory
    stage: Stage
    fields: frozenset[str]
    """Top-level manifest keys (besides apiVersion and kind) the resource takes; others are errors."""


_NOT_FIELDS = frozenset({"__self__", "resource_name", "opts", "__props__", "api_version", "kind"})


def _typed(resource_class: type[pulumi.CustomResource], stage: Stage) -> KindMapping:
    """A mapping to a generated pulumi_kubernetes class: top-level manifest keys become its keywords
    (`automountServiceAccountToken` -> `automount_service_account_token`), values pass unchanged."""
    parameters = inspect.signature(resource_class._internal_init).parameters  # type: ignore[attr-defined]
    keyword_of = {_snake_to_camel(name): name for name in parameters if name not in _NOT_FIELDS}

    def create(name: str, fields: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
        return resource_class(name, opts=opts, **{keyword_of[key]: value for key, value in fields.items()})

    return KindMapping(create, stage, frozenset(keyword_of))


def _custom_resource(api_version: str, kind: str, stage: Stage) -> KindMapping:
    """A mapping for an instance of a CRD (PrometheusRule, ScaledObject, ...): metadata and spec."""

    def create(name: str, fields: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
        return k8s.apiextensions.CustomResource(
            name,
            api_version=api_version,
            kind=kind,
            metadata=fields.get("metadata"),
            spec=fields.get("spec"),
            opts=opts,
        )

    return KindMapping(create, stage, frozenset({"metadata", "spec"}))


def _snake_to_camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


KINDS: dict[tuple[str, str], KindMapping] = {
    ("v1", "Namespace"): _typed(k8s.core.v1.Namespace, Stage.NAMESPACE),
    ("v1", "ServiceAccount"): _typed(k8s.core.v1.ServiceAccount, Stage.SETUP),
    ("v1", "ConfigMap"): _typed(k8s.core.v1.ConfigMap, Stage.SETUP),
    ("v1", "Secret"): _typed(k8s.core.v1.Secret, Stage.SETUP),
    ("v1", "Service"): _typed(k8s.core.v1.Service, Stage.SETUP),
    ("policy/v1", "PodDisruptionBudget"): _typed(k8s.policy.v1.PodDisruptionBudget, Stage.SETUP),
    ("networking.k8s.io/v1", "NetworkPolicy"): _typed(k8s.networking.v1.NetworkPolicy, Stage.SETUP),
    ("apps/v1", "StatefulSet"): _typed(k8s.apps.v1.StatefulSet, Stage.WORKLOAD),
    ("apps/v1", "Deployment"): _typed(k8s.apps.v1.Deployment, Stage.WORKLOAD),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _custom_resource(
        "monitoring.coreos.com/v1", "PrometheusRule", Stage.SETUP
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): _custom_resource("monitoring.coreos.com/v1", "PodMonitor", Stage.SETUP),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _custom_resource(
        "keda.sh/v1alpha1", "TriggerAuthentication", Stage.SETUP
    ),
    # With the pods, after the TriggerAuthentication and the Redis Secret it reads (KEDA waits for the
    # Deployment it scales if that is still being created).
    ("keda.sh/v1alpha1", "ScaledObject"): _custom_resource("keda.sh/v1alpha1", "ScaledObject", Stage.WORKLOAD),
}
"""(apiVersion, kind) -> resource. Extend here when the builder emits a new kind."""


def kind_mapping(manifest: Mapping[str, Any]) -> KindMapping:
    """The mapping for a manifest. An unknown (apiVersion, kind), or a top-level field the resource
    does not take, fails loudly instead of being skipped or dropped."""
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    described = f"apiVersion {key[0]!r} kind {key[1]!r} (object {manifest.get('metadata', {}).get('name')!r})"
    mapping = KINDS.get(key)
    if mapping is None:
        known = ", ".join(f"{api} {kind}" for api, kind in KINDS)
        raise ValueError(
            f"no Pulumi resource for {described}; known: {known}. Add it to killsafe.kubernetes.component.KINDS"
        )
    unknown = sorted(set(manifest) - {"apiVersion", "kind"} - mapping.fields)
    if unknown:
        raise ValueError(
            f"{described}: top-level field(s) {', '.join(unknown)} have no Pulumi input; "
            f"known: {', '.join(sorted(mapping.fields))}"
        )
    return mapping


def child_name(component_name: str, workload_name: str, object_name: str) -> str:
    """The Pulumi name of the child that creates `object_name` (see the module docstring)."""
    if object_name == workload_name:
        return component_name
    if object_name.startswith(f"{workload_name}-"):
        return component_name + object_name[len(workload_name) :]
    return f"{component_name}-{object_name}"


class KubernetesWorkload(pulumi.ComponentResource):
    """A killsafe workload on Kubernetes: every object `build_manifests(spec)` describes, as children.

    Opt-outs: `redis_secret=False` skips the generated Redis credentials (you then provide the Secret
    `redis_secret_name(spec)` yourself, and roll the pods when it changes); `protect_data=False` (or
    `spec.kubernetes.protect_data: false`) leaves the Namespace and Redis unprotected; `spec.web = None`,
    `spec.kubernetes.network_policies` and `spec.kubernetes.pod_disruption_budgets` drop those objects
    in the builder. A provider passed in
    `opts` (`provider=` or `providers=[...]`) reaches every child through `parent=self`.
    """

    namespace: pulumi.Output[str]
    worker_deployment_name: pulumi.Output[str]
    web_service_name: pulumi.Output[str | None]
    dashboard_service_name: pulumi.Output[str | None]
    """The job dashboard's ClusterIP Service (`kubectl port-forward svc/<it> 8090`), None when it is off."""
    redis_secret_name: pulumi.Output[str]
    shutdown_budget: dict[str, Any]
    resources: dict[tuple[str, str], pulumi.CustomResource]
    """Every Kubernetes child, by (kind, object name)."""

    def __init__(
        self,
        name: str,
        spec: WorkloadSpec,
        opts: pulumi.ResourceOptions | None = None,
        *,
        redis_secret: bool = True,
        protect_data: bool | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        manifests = build.build_manifests(spec)
        mappings = [kind_mapping(manifest) for manifest in manifests]  # fail before registering anything
        _check_unique_children(name, spec, manifests)
        protect = spec.kubernetes.protect_data if protect_data is None else protect_data

        self.resources = {}
        checksum: pulumi.Output[str] | None = None
        created: dict[Stage, list[pulumi.Resource]] = {stage: [] for stage in Stage}
        for stage in Stage:
            earlier = [resource for before in Stage if before < stage for resource in created[before]]
            for built, mapping in zip(manifests, mappings, strict=True):
                if mapping.stage != stage:
                    continue
                manifest = built
                if checksum is not None and credentials.reads_redis_secret(spec, built):
                    manifest = credentials.with_pod_annotations(
                        built, {credentials.CREDENTIALS_HASH_ANNOTATION: checksum}
                    )
                guarded = protect and holds_queue_data(spec, built)
                created[stage].append(self._create(name, spec, manifest, mapping, earlier, protect=guarded))
            if stage == Stage.SETUP and redis_secret and spec.redis.mode == "in-cluster":
                credentials_secret, checksum = self._redis_credentials(name, spec, earlier)
                created[stage].append(credentials_secret)

        namespace = spec.kubernetes.namespace
        has_namespace = ("Namespace", namespace) in self.resources
        self.namespace = self._created("Namespace", namespace) if has_namespace else pulumi.Output.from_input(namespace)
        self.worker_deployment_name = self._created("Deployment", worker_name(spec))
        self.web_service_name = (
            self._created("Service", web_name(spec)) if spec.web is not None else pulumi.Output.from_input(None)
        )
        self.dashboard_service_name = (
            self._created("Service", dashboard_name(spec)) if spec.dashboard.enabled else pulumi.Output.from_input(None)
        )
        secret = build.redis_secret_name(spec)
        generated = ("Secret", secret) in self.resources
        self.redis_secret_name = self._created("Secret", secret) if generated else pulumi.Output.from_input(secret)
        worker_budget = shutdown_budget(spec.worker)
        budget: dict[str, Any] = asdict(worker_budget)
        budget["rerun_after_kill_seconds"] = worker_budget.rerun_after_kill_seconds
        if spec.web is not None:
            budget["web"] = asdict(web_budget(spec.web))
        self.shutdown_budget = budget
        self.register_outputs(
            {
                "namespace": self.namespace,
                "worker_deployment_name": self.worker_deployment_name,
                "web_service_name": self.web_service_name,
                "dashboard_service_name": self.dashboard_service_name,
                "redis_secret_name": self.redis_secret_name,
                "shutdown_budget": self.shutdown_budget,
            }
        )

    def _created(self, kind: str, object_name: str) -> pulumi.Output[str]:
        """`object_name` as an output of the child that creates it: whoever uses it waits for it."""
        return self.resources[(kind, object_name)].urn.apply(lambda _: object_name)

    def _create(
        self,
        name: str,
        spec: WorkloadSpec,
        manifest: Mapping[str, Any],
        mapping: KindMapping,
        depends_on: Sequence[pulumi.Resource],
        *,
        protect: bool,
    ) -> pulumi.CustomResource:
        fields = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
        object_name = str(manifest["metadata"]["name"])
        resource = mapping.create(
            child_name(name, spec.name, object_name),
            fields,
            pulumi.ResourceOptions(parent=self, depends_on=list(depends_on), protect=protect),
        )
        self.resources[(str(manifest["kind"]), object_name)] = resource
        return resource

    def _redis_credentials(
        self, name: str, spec: WorkloadSpec, depends_on: Sequence[pulumi.Resource]
    ) -> tuple[pulumi.CustomResource, pulumi.Output[str]]:
        """The in-cluster Redis password and its Secret (password + URL), both secret in state, and the
        checksum of the Secret's values (plain: see `credentials.credentials_checksum`).

        Only for in-cluster Redis: an external Redis's Secret exists already.
        """
        secret_name = build.redis_secret_name(spec)
        secret_child = child_name(name, spec.name, secret_name)
        password = pulumi_random.RandomPassword(
            f"{secret_child}-password",
            length=REDIS_PASSWORD_LENGTH,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        template = build.redis_in_cluster_url_template(spec)

        def values(generated: str) -> dict[str, str]:
            return {
                contract.REDIS_PASSWORD_SECRET_KEY: generated,
                contract.REDIS_URL_SECRET_KEY: template.format(password=generated),
            }

        secret_password: pulumi.Output[str] = pulumi.Output.secret(password.result)
        secret_url: pulumi.Output[str] = pulumi.Output.secret(
            password.result.apply(lambda value: values(value)[contract.REDIS_URL_SECRET_KEY])
        )
        checksum: pulumi.Output[str] = pulumi.Output.unsecret(
            password.result.apply(lambda value: credentials.credentials_checksum(values(value)))
        )
        secret = k8s.core.v1.Secret(
            secret_child,
            metadata={
                "name": secret_name,
                "namespace": spec.kubernetes.namespace,
                "labels": labels.workload_labels(spec, "redis", spec.redis.image),  # as the builder labels Redis
            },
            type="Opaque",
            string_data={
                contract.REDIS_PASSWORD_SECRET_KEY: secret_password,
                contract.REDIS_URL_SECRET_KEY: secret_url,
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(depends_on),
                additional_secret_outputs=["data", "stringData"],
            ),
        )
        self.resources[("Secret", secret_name)] = secret
        return secret, checksum


def _check_unique_children(name: str, spec: WorkloadSpec, manifests: Sequence[Mapping[str, Any]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    objects = [(str(m["kind"]), str(m["metadata"]["name"])) for m in manifests]
    if spec.redis.mode == "in-cluster":
        objects.append(("Secret", build.redis_secret_name(spec)))
    for kind, object_name in objects:
        key = (kind, child_name(name, spec.name, object_name))
        if key in seen:
            raise ValueError(f"{kind} objects {seen[key]!r} and {object_name!r} would both be Pulumi child {key[1]!r}")
        seen[key] = object_name
