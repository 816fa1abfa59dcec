"""KubernetesWorkload under the mocked Pulumi engine: exact child inputs, names, parents, order, providers.

The engine is the only thing mocked (`pulumi.runtime.set_mocks`); the component runs for real on the
real builder output. `run_under_mocks` records every RegisterResource request as the engine would
receive it: raw camelCase wire inputs (secrets still wrapped), parent URN, provider reference,
dependencies and additional secret outputs. The harness is shared by the parity and program tests.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi.runtime import mocks, rpc

from killsafe import contract
from killsafe.config import load_stack
from killsafe.kubernetes import build, credentials
from killsafe.kubernetes.component import TYPE_TOKEN, KubernetesWorkload, child_name, kind_mapping
from killsafe.spec import WorkloadSpec
from tests.conftest import REPO

STACKS = REPO / "stacks"
MOCK_PASSWORD = "MockedRandomPassword0123456789ab"
RANDOM_PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"
SECRET_TYPE = "kubernetes:core/v1:Secret"


@dataclass(frozen=True)
class Registration:
    """One RegisterResource request, as the engine received it."""

    type: str
    name: str
    urn: str
    parent: str
    provider: str
    dependencies: tuple[str, ...]
    secret_outputs: tuple[str, ...]
    protect: bool
    inputs: dict[str, Any]


class EchoMocks(pulumi.runtime.Mocks):
    """Resources come back with their inputs as state; RandomPassword returns a fixed `result`."""

    def __init__(self, password: str = MOCK_PASSWORD) -> None:
        self.password = password

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == RANDOM_PASSWORD_TYPE:
            state["result"] = self.password
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        raise AssertionError(f"unexpected provider function call {args.token}")


class RecordingMonitor(mocks.MockMonitor):
    """The stock mock monitor, plus a log of every registration and every registered output map."""

    def __init__(self, mocks: pulumi.runtime.Mocks | None = None, password: str = MOCK_PASSWORD) -> None:
        super().__init__(mocks or EchoMocks(password))
        self.registrations: list[Registration] = []
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=tuple(request.dependencies),
                    secret_outputs=tuple(request.additionalSecretOutputs),
                    protect=bool(request.protect),
                    inputs=rpc.deserialize_properties(request.object),
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        self.outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str) -> Registration:
        found = [r for r in self.registrations if r.type == type_ and r.name == name]
        assert len(found) == 1, f"{type_} {name}: {[(r.type, r.name) for r in self.registrations]}"
        return found[0]


@dataclass
class Run:
    """What a mocked program run left behind: the engine's log, and the program's exception if any."""

    monitor: RecordingMonitor
    error: BaseException | None = None


def run_under_mocks(
    program: Callable[[], Any],
    *,
    stack: str = "test",
    config: dict[str, str] | None = None,
    mocks: pulumi.runtime.Mocks | None = None,
    password: str = MOCK_PASSWORD,
) -> Run:
    """Run `program` as a Pulumi program on a fresh mocked engine and wait for every registration.

    The Pulumi runtime keeps its settings, config and root stack in context variables: running in a
    copied context leaves other tests' mocks untouched. An exception from the program is returned
    (not raised) after the engine settles, so a test can assert the error and that nothing was created.
    """
    return contextvars.copy_context().run(_run_isolated, program, stack, config or {}, mocks, password)


def _run_isolated(
    program: Callable[[], Any],
    stack: str,
    config: dict[str, str],
    mocks: pulumi.runtime.Mocks | None = None,
    password: str = MOCK_PASSWORD,
) -> Run:
    # The Pulumi SDK (set_mocks registering the Stack, runtime.test driving the program) uses
    # asyncio.get_event_loop(); after any asyncio.run() elsewhere in the session there is none, so
    # each mocked run gets, and closes, a loop of its own.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.reset_options(project="killsafe", stack=stack, preview=False)
    pulumi.runtime.set_all_config(config, [])
    monitor = RecordingMonitor(mocks, password)
    pulumi.runtime.set_mocks(monitor.mocks, project="killsafe", stack=stack, preview=False, monitor=monitor)
    run = Run(monitor)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # the SDK leaves it unannotated
    def body() -> Any:
        return program()  # an Output returned here is awaited too

    try:
        body()
    except Exception as exc:
        run.error = exc
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return run


def wire_json(value: Any) -> Any:
    """Wire values as the JSON a manifest holds: integral numbers (sent as doubles) back to int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: wire_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [wire_json(item) for item in value]
    return value


def canonical(value: Any) -> str:
    """Type-exact comparison text: `true` != `1` and `1` != `"1"` (plain == would equate the first)."""
    return json.dumps(value, sort_keys=True)


def stack_spec(stack: str) -> WorkloadSpec:
    return load_stack(stack, STACKS).workload


def k8s_children(run: Run) -> list[Registration]:
    return [r for r in run.monitor.registrations if r.type.startswith("kubernetes:")]


def object_name(registration: Registration) -> str:
    return str(registration.inputs["metadata"]["name"])


def by_object(run: Run, kind: str, name: str) -> Registration:
    found = [r for r in k8s_children(run) if r.inputs.get("kind") == kind and object_name(r) == name]
    assert len(found) == 1, (kind, name, [(r.inputs.get("kind"), object_name(r)) for r in k8s_children(run)])
    return found[0]


def pod_spec(registration: Registration) -> dict[str, Any]:
    return dict(registration.inputs["spec"]["template"]["spec"])


# --- Tests ----------------------------------------------------------------------------------------


def test_worker_and_web_inputs_reach_the_engine_exactly() -> None:
    spec = stack_spec("staging")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None

    worker = by_object(run, "Deployment", "emails-worker")
    # max_job_seconds 120 + default drain margin 15: the kill deadline
    assert worker.inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135
    assert canonical(wire_json(pod_spec(worker)["automountServiceAccountToken"])) == "false"

    web = by_object(run, "Deployment", "emails-web")
    (web_container,) = pod_spec(web)["containers"]
    assert web_container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5.0}}

    service_accounts = [r for r in k8s_children(run) if r.inputs["kind"] == "ServiceAccount"]
    assert service_accounts
    assert all(sa.inputs["automountServiceAccountToken"] is False for sa in service_accounts)


def test_children_are_named_after_their_objects_and_parented_to_the_component() -> None:
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    assert component.name == "emails"

    children = [r for r in run.monitor.registrations if r is not component]
    assert children
    assert {r.parent for r in children} == {component.urn}
    for child in k8s_children(run):
        assert child.name == object_name(child), "component name = workload name: Pulumi name = k8s name"
    assert run.monitor.one(SECRET_TYPE, "emails-redis-auth")
    assert run.monitor.one(RANDOM_PASSWORD_TYPE, "emails-redis-auth-password")


def test_a_different_component_name_replaces_the_workload_prefix() -> None:
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("blue", spec))
    assert run.error is None
    names = {(r.type, r.name) for r in run.monitor.registrations}
    assert ("kubernetes:apps/v1:Deployment", "blue-worker") in names
    assert ("kubernetes:apps/v1:Deployment", "blue-web") in names
    assert (SECRET_TYPE, "blue-redis-auth") in names
    assert (RANDOM_PASSWORD_TYPE, "blue-redis-auth-password") in names
    # the Kubernetes objects keep the builder's names
    assert object_name(run.monitor.one("kubernetes:apps/v1:Deployment", "blue-worker")) == "emails-worker"


def test_child_name_scheme() -> None:
    assert child_name("emails", "emails", "emails") == "emails"
    assert child_name("emails", "emails", "emails-worker") == "emails-worker"
    assert child_name("blue", "emails", "emails-worker") == "blue-worker"
    assert child_name("blue", "emails", "emailsx") == "blue-emailsx"
    assert child_name("blue", "emails", "prod") == "blue-prod"


def test_namespace_first_then_setup_then_pods() -> None:
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    namespace = by_object(run, "Namespace", spec.kubernetes.namespace)
    secret = run.monitor.one(SECRET_TYPE, "emails-redis-auth")
    setup = [r for r in k8s_children(run) if r.inputs["kind"] not in ("Namespace", "Deployment", "StatefulSet")]
    assert secret in setup
    for child in k8s_children(run):
        if child is not namespace:
            assert namespace.urn in child.dependencies, child.name
    for kind in ("Deployment", "StatefulSet"):
        for pod_owner in (r for r in k8s_children(run) if r.inputs["kind"] == kind):
            missing = {r.name for r in setup if r.urn not in pod_owner.dependencies}
            assert not missing, f"{pod_owner.name} may start before {missing}"


def test_generated_redis_secret_is_secret_and_stable() -> None:
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    (password,) = run.monitor.of_type(RANDOM_PASSWORD_TYPE)
    assert wire_json(password.inputs) == {"length": 32, "special": False}, "fixed inputs: never regenerated"
    assert "result" in password.secret_outputs

    (secret,) = run.monitor.of_type(SECRET_TYPE)
    assert rpc.is_rpc_secret(secret.inputs["stringData"])
    assert "stringData" in secret.secret_outputs and "data" in secret.secret_outputs
    values = rpc.unwrap_rpc_secret(secret.inputs["stringData"])
    assert values == {
        contract.REDIS_PASSWORD_SECRET_KEY: MOCK_PASSWORD,
        contract.REDIS_URL_SECRET_KEY: build.redis_in_cluster_url_template(spec).format(password=MOCK_PASSWORD),
    }
    assert "data" not in secret.inputs
    assert secret.inputs["metadata"]["namespace"] == spec.kubernetes.namespace


def test_generated_redis_secret_passes_the_kubernetes_schema(tmp_path: Path) -> None:
    """The one object the builder does not emit, checked by the same strict validator as the rest."""
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    (secret,) = run.monitor.of_type(SECRET_TYPE)
    document = {**secret.inputs, "stringData": rpc.unwrap_rpc_secret(secret.inputs["stringData"])}
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(document))
    validator = REPO / ".venv" / "bin" / "kubernetes-validate"
    assert validator.exists(), "kubernetes-validate is a dev dependency: run bash .ci/bootstrap"
    result = subprocess.run(
        [str(validator), "--strict", "--quiet", "-k", "1.33.0", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout


def test_redis_secret_opt_out_creates_no_secret_and_no_password() -> None:
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec, redis_secret=False))
    assert run.error is None
    assert not run.monitor.of_type(SECRET_TYPE)
    assert not run.monitor.of_type(RANDOM_PASSWORD_TYPE)
    assert by_object(run, "Deployment", "emails-worker")


def test_external_redis_generates_nothing() -> None:
    spec = stack_spec("prod")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    assert not run.monitor.of_type(SECRET_TYPE)
    assert not run.monitor.of_type(RANDOM_PASSWORD_TYPE)


@pytest.mark.parametrize("how", ["provider", "providers"])
def test_a_provider_given_to_the_component_reaches_every_kubernetes_child(how: str) -> None:
    spec = stack_spec("dev")
    holder: list[k8s.Provider] = []

    def program() -> None:
        provider = k8s.Provider("rendering", render_yaml_to_directory="out/rendered")
        holder.append(provider)
        opts = (
            pulumi.ResourceOptions(provider=provider)
            if how == "provider"
            else pulumi.ResourceOptions(providers=[provider])
        )
        KubernetesWorkload("emails", spec, opts)

    run = run_under_mocks(program)
    assert run.error is None
    (provider,) = run.monitor.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == "out/rendered"
    children = k8s_children(run)
    assert children
    for child in children:
        assert child.provider == f"{provider.urn}::rendering-id", child.name
    (password,) = run.monitor.of_type(RANDOM_PASSWORD_TYPE)
    assert not password.provider.startswith(provider.urn), "a kubernetes provider never reaches random"


def test_without_a_provider_children_use_the_ambient_one() -> None:
    spec = stack_spec("dev")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    assert not run.monitor.of_type("pulumi:providers:kubernetes")
    assert {child.provider for child in k8s_children(run)} == {""}


def test_component_outputs() -> None:
    spec = stack_spec("staging")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    outputs = wire_json(run.monitor.outputs[component.urn])
    assert outputs["namespace"] == "emails-staging"
    assert outputs["worker_deployment_name"] == "emails-worker"
    assert outputs["web_service_name"] == "emails-web"
    assert outputs["redis_secret_name"] == "emails-redis-auth"
    budget = outputs["shutdown_budget"]
    assert budget["kill_deadline_seconds"] == 135
    assert budget["drain_deadline_seconds"] == 130
    assert budget["web"]["kill_deadline_seconds"] == 5 + 10 + 5


def test_worker_only_workload_has_no_web_objects() -> None:
    spec = stack_spec("dev").model_copy(update={"web": None})
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    assert run.monitor.outputs[component.urn].get("web_service_name") is None
    assert not [r for r in k8s_children(run) if object_name(r) == "emails-web"]


def test_a_namespace_managed_elsewhere_is_neither_created_nor_waited_for() -> None:
    dev = stack_spec("dev")
    spec = dev.model_copy(update={"kubernetes": dev.kubernetes.model_copy(update={"create_namespace": False})})
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    assert not [r for r in k8s_children(run) if r.inputs["kind"] == "Namespace"]
    assert {r.inputs["metadata"]["namespace"] for r in k8s_children(run)} == {"emails-dev"}
    (component,) = run.monitor.of_type(TYPE_TOKEN)
    assert run.monitor.outputs[component.urn]["namespace"] == "emails-dev"


def test_an_unknown_kind_fails_loudly() -> None:
    with pytest.raises(ValueError, match=r"no Pulumi resource for apiVersion 'v1' kind 'Pod'"):
        kind_mapping({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    with pytest.raises(ValueError, match=r"no Pulumi resource for apiVersion 'policy/v1beta1' kind 'PodDis"):
        kind_mapping({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"}})


def test_a_top_level_field_without_a_pulumi_input_fails_loudly() -> None:
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}, "status": {}}
    with pytest.raises(ValueError, match=r"top-level field\(s\) status have no Pulumi input"):
        kind_mapping(manifest)
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False}
    assert kind_mapping(service_account)


def test_a_custom_resource_kind_reaches_the_engine_with_its_own_group_and_camel_case_spec() -> None:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "emails-alerts", "namespace": "emails"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "for": "5m"}]}]},
    }
    fields = {key: value for key, value in rule.items() if key not in ("apiVersion", "kind")}
    run = run_under_mocks(lambda: kind_mapping(rule).create("emails-alerts", fields, pulumi.ResourceOptions()))
    assert run.error is None
    (created,) = run.monitor.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    assert canonical(wire_json(created.inputs)) == canonical(rule)


# --- Issue 7.7: a new Redis password rolls every pod that reads it ---------------------------------


def _credentials_annotations(run: Run) -> dict[str, str | None]:
    """Pod-owning object name -> its credentials checksum annotation (None when absent)."""
    found: dict[str, str | None] = {}
    for child in k8s_children(run):
        if child.inputs["kind"] in ("Deployment", "StatefulSet"):
            annotations = child.inputs["spec"]["template"]["metadata"].get("annotations", {})
            found[object_name(child)] = annotations.get(credentials.CREDENTIALS_HASH_ANNOTATION)
    return found


def test_a_new_redis_password_changes_every_pod_template_that_reads_it() -> None:
    spec = stack_spec("staging")
    first = _credentials_annotations(run_under_mocks(lambda: KubernetesWorkload("emails", spec)))
    rotated = _credentials_annotations(
        run_under_mocks(lambda: KubernetesWorkload("emails", spec), password="RotatedRandomPassword0123456789ab")
    )
    assert set(first) == {"emails-web", "emails-worker", "emails-redis", "emails-redis-exporter"}
    for name, checksum in first.items():
        assert checksum is not None and re.fullmatch(r"[0-9a-f]{64}", checksum), name
        assert rotated[name] is not None and rotated[name] != checksum, f"{name} would not roll"
    assert len(set(first.values())) == 1  # one Secret, one checksum
    assert MOCK_PASSWORD not in json.dumps(first)


def test_the_checksum_is_plain_so_diffs_stay_readable() -> None:
    run = run_under_mocks(lambda: KubernetesWorkload("emails", stack_spec("staging")))
    worker = by_object(run, "Deployment", "emails-worker")
    annotations = worker.inputs["spec"]["template"]["metadata"]["annotations"]
    assert not rpc.is_rpc_secret(annotations[credentials.CREDENTIALS_HASH_ANNOTATION])
    assert not rpc.is_rpc_secret(worker.inputs["spec"])


@pytest.mark.parametrize("case", ["external redis", "secret managed elsewhere"])
def test_no_checksum_when_killsafe_does_not_own_the_secret(case: str) -> None:
    if case == "external redis":
        run = run_under_mocks(lambda: KubernetesWorkload("emails", stack_spec("prod")))
    else:
        run = run_under_mocks(lambda: KubernetesWorkload("emails", stack_spec("staging"), redis_secret=False))
    assert run.error is None
    assert set(_credentials_annotations(run).values()) == {None}


# --- Issue 7.8: the queue's data outlives a destroy, a rename or a storage change -----------------


def test_namespace_and_redis_are_protected_by_default() -> None:
    run = run_under_mocks(lambda: KubernetesWorkload("emails", stack_spec("staging")))
    assert run.error is None
    protected = {(c.inputs["kind"], object_name(c)) for c in k8s_children(run) if c.protect}
    assert protected == {("Namespace", "emails-staging"), ("StatefulSet", "emails-redis")}
    external = run_under_mocks(lambda: KubernetesWorkload("emails", stack_spec("prod")))
    assert {(c.inputs["kind"], object_name(c)) for c in k8s_children(external) if c.protect} == {
        ("Namespace", "emails")
    }


def test_protection_opt_outs() -> None:
    staging = stack_spec("staging")
    unprotected = staging.model_copy(
        update={"kubernetes": staging.kubernetes.model_copy(update={"protect_data": False})}
    )
    for run in (
        run_under_mocks(lambda: KubernetesWorkload("emails", unprotected)),
        run_under_mocks(lambda: KubernetesWorkload("emails", staging, protect_data=False)),
    ):
        assert run.error is None
        assert not [c for c in run.monitor.registrations if c.protect]
