"""The job dashboard on Kubernetes (issue 12 part 2): its Deployment, ClusterIP Service and NetworkPolicy,
the checklist rule that keeps it off the web port, the spec's Kubernetes-only rules, the prerequisites
printed for its users Secret, the component's exact child inputs, and acceptance item 2 on the files
`killsafe render --stack dev` writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from killsafe import app_env, contract
from killsafe.config import ConfigError, parse_stack_config
from killsafe.kubernetes import build, credentials, network, probes
from killsafe.kubernetes.app_env import dashboard_credentials_file, redis_url_file
from killsafe.kubernetes.checks import check_kubernetes
from killsafe.kubernetes.dashboard import GRACE_SECONDS, STARTUP_CPU_SECONDS, dashboard_name, dashboard_prerequisites
from killsafe.kubernetes.labels import selector_labels
from killsafe.kubernetes.target import read_rendered
from killsafe.spec import WorkloadSpec
from tests.conftest import REPO
from tests.kubernetes.k8s_specs import (
    BASE,
    BASIC_DASHBOARD,
    PROXIED_DASHBOARD,
    container,
    env_of,
    find,
    make_spec,
    stack_spec,
    variants,
)
from tests.kubernetes.test_component import (
    MOCK_PASSWORD,
    by_object,
    canonical,
    run_under_mocks,
    wire_json,
)
from tests.test_cli import run as killsafe

Manifest = dict[str, Any]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def pod_labels(manifests: list[Manifest], name: str) -> dict[str, str]:
    return dict(find(manifests, "Deployment", name)["spec"]["template"]["metadata"]["labels"])


def service_selects(service: Manifest, labels: dict[str, str]) -> bool:
    selector = service["spec"].get("selector") or {}
    return bool(selector) and matches({"matchLabels": selector}, labels)


def dashboard_spec(**dashboard: Any) -> WorkloadSpec:
    return make_spec(dashboard={**BASIC_DASHBOARD, **dashboard})


# --- what the builder emits -------------------------------------------------------------------------


def test_no_dashboard_object_unless_enabled() -> None:
    manifests = build.build_manifests(make_spec())
    assert not [m for m in manifests if m["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard"]
    assert not [m for m in manifests if m["kind"] != "ConfigMap" and m["metadata"]["name"] == "emails-dashboard"]
    redis = find(manifests, "NetworkPolicy", "emails-redis")
    assert redis["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["web", "worker"]
    assert dashboard_prerequisites(make_spec()) == []


def test_dev_dashboard_deployment() -> None:
    spec = stack_spec("dev")
    dashboard = spec.dashboard
    manifests = build.build_manifests(spec)
    deployment = find(manifests, "Deployment", "emails-dashboard")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one process at a time: CSRF key, retry budget"
    assert deployment["spec"]["selector"]["matchLabels"] == selector_labels(spec, "dashboard")
    assert pod_labels(manifests, "emails-dashboard")["app.kubernetes.io/component"] == "dashboard"

    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] == GRACE_SECONDS
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = container(manifests, "Deployment", "emails-dashboard")
    assert c["args"] == dashboard.command and "command" not in c, "the image's dumb-init stays PID 1"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["ports"] == [{"name": "dashboard", "containerPort": dashboard.port, "protocol": "TCP"}]
    expected_probes = probes.probe_set(
        dashboard.port, dashboard.cpu_millicores, startup_cpu_seconds=STARTUP_CPU_SECONDS
    ).manifest()
    assert {key: c[key] for key in expected_probes} == expected_probes
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 80, "8 CPU-s at 100m"
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] == 30
    assert c["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert c["livenessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == contract.LIVE_PATH
    amounts = {"cpu": f"{dashboard.cpu_millicores}m", "memory": f"{dashboard.memory_mib}Mi"}
    assert c["resources"] == {"requests": amounts, "limits": amounts}

    credentials_file = f"{contract.DASHBOARD_CREDENTIALS_MOUNT_DIR}/{contract.DASHBOARD_CREDENTIALS_SECRET_KEY}"
    assert dashboard_credentials_file() == credentials_file
    assert env_of(c) == app_env.dashboard_env(spec, redis_url_file(), credentials_file)
    assert contract.ENV_DASHBOARD_BIND not in env_of(c), "every address of the pod: port-forward arrives on loopback"

    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "64Mi"}
    assert volumes["redis-credentials"]["secret"]["secretName"] == build.redis_secret_name(spec)
    assert volumes["dashboard-credentials"]["secret"] == {
        "secretName": "emails-dashboard-users",
        "items": [{"key": "credentials", "path": contract.DASHBOARD_CREDENTIALS_SECRET_KEY}],
        "defaultMode": 0o440,
        "optional": False,
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["dashboard-credentials"] == {
        "name": "dashboard-credentials",
        "mountPath": contract.DASHBOARD_CREDENTIALS_MOUNT_DIR,
        "readOnly": True,
    }
    assert mounts["redis-credentials"]["readOnly"] is True and mounts["tmp"]["mountPath"] == "/tmp"
    assert not any("subPath" in m for m in c["volumeMounts"]), "subPath mounts never see a changed Secret"

    pdbs = [m for m in manifests if m["kind"] == "PodDisruptionBudget"]
    assert not [p for p in pdbs if matches(p["spec"]["selector"], pod_labels(manifests, "emails-dashboard"))]


def test_a_secret_key_other_than_the_file_name_is_mounted_under_the_contract_name() -> None:
    spec = variants()["opt-outs"]
    manifests = build.build_manifests(spec)
    pod = find(manifests, "Deployment", "emails-dashboard")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "dashboard-credentials"]
    assert volume["secret"]["items"] == [{"key": "users.txt", "path": contract.DASHBOARD_CREDENTIALS_SECRET_KEY}]
    env = env_of(container(manifests, "Deployment", "emails-dashboard"))
    assert env[contract.ENV_DASHBOARD_CREDENTIALS_FILE] == dashboard_credentials_file()


def test_trusted_header_mode_mounts_no_credentials_and_passes_the_proxy_settings() -> None:
    spec = variants()["external-redis"]
    manifests = build.build_manifests(spec)
    c = container(manifests, "Deployment", "emails-dashboard")
    env = env_of(c)
    assert env == app_env.dashboard_env(spec, redis_url_file(), None)
    assert env[contract.ENV_DASHBOARD_AUTH] == "trusted-header"
    assert env[contract.ENV_DASHBOARD_USER_HEADER] == "X-Forwarded-User"
    assert env[contract.ENV_DASHBOARD_TRUSTED_PROXIES] == "10.244.0.0/16,fd00:10:244::/56"
    assert env[contract.ENV_NEVER_AUTO_RETRY] == "charge"
    assert contract.ENV_DASHBOARD_CREDENTIALS_FILE not in env
    assert [m["name"] for m in c["volumeMounts"]] == ["redis-credentials", "tmp"]
    assert c["resources"]["limits"] == {"cpu": "50m", "memory": "320Mi"}
    assert dashboard_prerequisites(spec) == []


def test_the_dashboard_service_is_cluster_ip_and_the_only_one_selecting_it() -> None:
    spec = stack_spec("dev")
    manifests = build.build_manifests(spec)
    service = find(manifests, "Service", "emails-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "dashboard", "port": spec.dashboard.port, "targetPort": "dashboard", "protocol": "TCP"}
    ]
    dashboard_pods = pod_labels(manifests, "emails-dashboard")
    selecting = [
        s["metadata"]["name"] for s in manifests if s["kind"] == "Service" and service_selects(s, dashboard_pods)
    ]
    assert selecting == ["emails-dashboard"]
    for tier in ("emails-web", "emails-worker"):
        assert not service_selects(service, pod_labels(manifests, tier)), tier


@pytest.mark.parametrize(
    ("allowed_from", "sources"),
    [
        ({}, None),
        (
            {"cidrs": ["10.8.0.0/16", "fd00:8::/64"], "kubernetes_namespaces": ["oauth2-proxy", "vpn"]},
            [
                {"ipBlock": {"cidr": "10.8.0.0/16"}},
                {"ipBlock": {"cidr": "fd00:8::/64"}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "oauth2-proxy"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vpn"}}},
            ],
        ),
    ],
)
def test_the_network_policy_admits_only_allowed_from(allowed_from: dict[str, Any], sources: Any) -> None:
    spec = dashboard_spec(allowed_from=allowed_from)
    manifests = build.build_manifests(spec)
    policy = find(manifests, "NetworkPolicy", "emails-dashboard")
    assert policy["spec"]["podSelector"] == {"matchLabels": selector_labels(spec, "dashboard")}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    expected = [] if sources is None else [{"from": sources, "ports": [{"protocol": "TCP", "port": 8090}]}]
    assert policy["spec"]["ingress"] == expected, "nothing listed: no rule, only port-forward gets in"
    assert policy["spec"]["egress"] == [network.dns_egress(spec), network.redis_egress(spec)]

    redis = find(manifests, "NetworkPolicy", "emails-redis")
    admitted = [
        peer["podSelector"]
        for rule in redis["spec"]["ingress"]
        for peer in rule["from"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert any(matches(selector, pod_labels(manifests, "emails-dashboard")) for selector in admitted)


def test_external_redis_egress_is_by_port() -> None:
    spec = variants()["external-redis"]
    policy = find(build.build_manifests(spec), "NetworkPolicy", "emails-dashboard")
    assert policy["spec"]["egress"][1] == {"ports": [{"protocol": "TCP", "port": 6380}]}
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_no_policy_when_network_policies_are_off() -> None:
    manifests = build.build_manifests(variants()["opt-outs"])
    assert not [m for m in manifests if m["kind"] == "NetworkPolicy"]
    annotations = find(manifests, "Deployment", "emails-dashboard")["metadata"]["annotations"]
    assert any(value.startswith("CKV2_K8S_6=") for value in annotations.values())


def test_the_redis_checksum_rolls_the_dashboard_and_the_rotation_command_names_it() -> None:
    spec = stack_spec("dev")
    manifests = build.build_manifests(spec)
    assert credentials.reads_redis_secret(spec, find(manifests, "Deployment", "emails-dashboard"))
    assert "deployment/emails-dashboard" in credentials.rollout_restart(spec, manifests).split()


# --- KS004: the dashboard never through the web Service/port -----------------------------------------


@pytest.mark.parametrize("variant", ["dev", "external-redis", "opt-outs"])
def test_the_built_objects_pass_the_checklist(variant: str) -> None:
    spec = variants()[variant]
    assert [str(f) for f in check_kubernetes(spec, build.build_manifests(spec)) if f.level == "error"] == []


def _edited(edit: str) -> tuple[WorkloadSpec, list[Manifest]]:
    spec = stack_spec("dev")
    manifests = build.build_manifests(spec)
    web = find(manifests, "Service", "emails-web")
    dashboard = find(manifests, "Service", "emails-dashboard")
    if edit == "web service without its component":
        del web["spec"]["selector"]["app.kubernetes.io/component"]
    elif edit == "dashboard on the web port":
        dashboard["spec"]["ports"][0]["port"] = spec.web.port if spec.web else 0
    elif edit == "dashboard as a LoadBalancer":
        dashboard["spec"]["type"] = "LoadBalancer"
    elif edit == "dashboard with external IPs":
        dashboard["spec"]["externalIPs"] = ["203.0.113.7"]
    elif edit == "web service pointed at the dashboard pods":
        web["spec"]["selector"]["app.kubernetes.io/component"] = "dashboard"
    return spec, manifests


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("web service without its component", "selects both web and dashboard pods"),
        ("dashboard on the web port", "exposes the dashboard pods on the web port 8000"),
        ("dashboard as a LoadBalancer", "exposes the dashboard outside the cluster (type LoadBalancer)"),
        ("dashboard with external IPs", "exposes the dashboard outside the cluster (type ClusterIP, externalIPs)"),
        ("web service pointed at the dashboard pods", "Service/emails-web: exposes the dashboard pods on the web port"),
    ],
)
def test_ks004_catches_a_service_that_exposes_the_dashboard(edit: str, message: str) -> None:
    spec, manifests = _edited(edit)
    findings = [str(f) for f in check_kubernetes(spec, manifests) if f.rule == "KS004"]
    assert any(message in f for f in findings), findings


def test_killsafe_check_finds_a_hand_edit_that_exposes_the_dashboard(tmp_path: Path) -> None:
    """Through the real CLI, on rendered files edited the way someone would (the web Service widened)."""
    out = tmp_path / "out"
    rendered = killsafe("render", "--stack", "dev", "--out", str(out))
    assert rendered.returncode == 0, rendered.stderr
    (web_file,) = (out / "kubernetes").glob("*-service-emails-web.yaml")
    web = yaml.safe_load(web_file.read_text())
    del web["spec"]["selector"]["app.kubernetes.io/component"]
    web_file.write_text(yaml.safe_dump(web))
    checked = killsafe("check", "--stack", "dev", "--manifests", str(out / "kubernetes"))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "KS004 Service/emails-web: selects both web and dashboard pods" in checked.stdout


# --- the spec on Kubernetes ------------------------------------------------------------------------


def kubernetes_error(dashboard: dict[str, Any], target: str = "kubernetes", **workload: Any) -> str:
    raw = {"target": target, "workload": {**BASE, **workload, "dashboard": dashboard}}
    with pytest.raises(ConfigError) as refused:
        parse_stack_config(raw, "stacks/Pulumi.x.yaml")
    assert len(refused.value.issues) == 1
    return str(refused.value)


@pytest.mark.parametrize(
    ("dashboard", "expected"),
    [
        (
            {**BASIC_DASHBOARD, "bind": ["127.0.0.1"]},
            "killsafe:workload.dashboard.bind: [127.0.0.1] is for systemd; on Kubernetes",
        ),
        (
            {**BASIC_DASHBOARD, "allowed_from": {"security_group_ids": ["sg-0123456789abcdef0"]}},
            "killsafe:workload.dashboard.allowed_from.security_group_ids: [sg-0123456789abcdef0] is for ECS",
        ),
        (
            {**BASIC_DASHBOARD, "auth": {"mode": "basic", "credentials_secret": {"name": "Emails_Users"}}},
            "killsafe:workload.dashboard.auth.credentials_secret.name: Emails_Users is not a Kubernetes Secret name",
        ),
        (
            {**BASIC_DASHBOARD, "auth": {"mode": "basic", "credentials_secret": {"name": "u", "key": "a/b"}}},
            "killsafe:workload.dashboard.auth.credentials_secret.key: a/b is not a Kubernetes Secret key",
        ),
        (
            {
                **PROXIED_DASHBOARD,
                "auth": {"mode": "trusted-header", "user_header": "X-Forwarded-User"},
            },
            "killsafe:workload.dashboard.auth.trusted_proxies: [127.0.0.1/32, '::1/128'] trusts loopback only",
        ),
    ],
)
def test_kubernetes_only_dashboard_rules_name_the_field(dashboard: dict[str, Any], expected: str) -> None:
    assert expected in kubernetes_error(dashboard)


def test_the_same_fields_are_left_to_the_other_targets() -> None:
    """bind is systemd's, an ARN is ECS's secret name: the Kubernetes rules apply to Kubernetes only."""
    vm = {
        **BASIC_DASHBOARD,
        "bind": ["127.0.0.1"],
        "auth": {"mode": "basic", "credentials_secret": {"name": "/etc/emails/dashboard-users"}},
    }
    vm_workload = {**BASE, "kubernetes": {}, "redis": {"mode": "local"}, "dashboard": vm}
    parse_stack_config({"target": "systemd", "workload": vm_workload}, "stacks/Pulumi.vm.yaml")
    assert "is not a Kubernetes Secret name" in kubernetes_error(vm | {"bind": None})
    disabled = {
        "enabled": False,
        "bind": ["127.0.0.1"],
        "allowed_from": {"security_group_ids": ["sg-0123456789abcdef0"]},
    }
    parse_stack_config({"target": "kubernetes", "workload": {**BASE, "dashboard": disabled}}, "x.yaml")


def test_the_dashboard_never_shares_the_web_port() -> None:
    message = kubernetes_error({**BASIC_DASHBOARD, "port": 8000})
    assert "killsafe:workload.dashboard.port: 8000 is the web port" in message


# --- prerequisites: the users Secret from a file ---------------------------------------------------


def test_render_prints_the_users_secret_command_from_a_file(tmp_path: Path) -> None:
    result = killsafe("render", "--stack", "dev", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    command = (
        "kubectl -n emails-dev create secret generic emails-dashboard-users --from-file=credentials=./dashboard-users"
    )
    assert command in result.stdout
    assert "--from-literal" not in result.stdout
    assert "killsafe-dashboard hash-password --user NAME --role viewer|operator" in result.stdout
    assert result.stdout.index("emails-redis-auth") < result.stdout.index("emails-dashboard-users")


def test_the_cluster_path_exports_the_users_secret_command_too() -> None:
    from tests.kubernetes.test_component_program import run_program, stack_config

    config = stack_config("dev")
    config.pop("killsafe:render_yaml_to_directory")
    run, exports = run_program("dev", config)
    assert run.error is None
    assert exports["prerequisites"] == dashboard_prerequisites(stack_spec("dev"))
    assert exports["dashboard_service"] == "emails-dashboard"


# --- the component: exact child inputs ---------------------------------------------------------------


def test_the_component_creates_the_dashboard_with_exactly_the_built_inputs() -> None:
    from killsafe.kubernetes.component import KubernetesWorkload

    spec = stack_spec("dev")
    manifests = build.build_manifests(spec)
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    values = {
        contract.REDIS_PASSWORD_SECRET_KEY: MOCK_PASSWORD,
        contract.REDIS_URL_SECRET_KEY: build.redis_in_cluster_url_template(spec).format(password=MOCK_PASSWORD),
    }
    checksum = credentials.credentials_checksum(values)
    for kind in ("Deployment", "Service", "NetworkPolicy"):
        created = by_object(run, kind, dashboard_name(spec))
        expected = find(manifests, kind, dashboard_name(spec))
        if kind == "Deployment":
            expected = credentials.with_pod_annotations(expected, {credentials.CREDENTIALS_HASH_ANNOTATION: checksum})
        assert canonical(wire_json(created.inputs)) == canonical(expected), kind
        assert created.name == dashboard_name(spec)
    deployment = by_object(run, "Deployment", dashboard_name(spec))
    for setup in ("Service", "NetworkPolicy"):
        assert by_object(run, setup, dashboard_name(spec)).urn in deployment.dependencies
    (component,) = run.monitor.of_type("killsafe:kubernetes:Workload")
    assert run.monitor.outputs[component.urn]["dashboard_service_name"] == "emails-dashboard"


def test_the_component_output_is_none_without_a_dashboard() -> None:
    from killsafe.kubernetes.component import KubernetesWorkload

    spec = stack_spec("staging")
    run = run_under_mocks(lambda: KubernetesWorkload("emails", spec))
    assert run.error is None
    (component,) = run.monitor.of_type("killsafe:kubernetes:Workload")
    assert run.monitor.outputs[component.urn].get("dashboard_service_name") is None


# --- a changed users Secret needs no restart --------------------------------------------------------


def test_the_dashboard_rereads_users_the_kubelet_swaps_in(tmp_path: Path) -> None:
    """The kubelet updates a mounted Secret by writing a new timestamped folder and swapping the `..data`
    symlink (the file itself is a symlink into it). The dashboard's credential reload sees that."""
    import asyncio

    from killsafe_worker.dashboard.auth import BasicAuthenticator
    from killsafe_worker.dashboard.settings import load_dashboard_settings
    from tests.dashboard.conftest import write_credentials

    mount = tmp_path / "killsafe-dashboard"
    mount.mkdir()

    def publish(users: dict[str, tuple[str, str]], version: int) -> None:
        folder = mount / f"..2024_01_0{version}_00_00_00.{version}"
        folder.mkdir()
        write_credentials(folder / "credentials", users)
        (mount / "..data_tmp").symlink_to(folder.name)
        os.replace(mount / "..data_tmp", mount / "..data")

    publish({"alice": ("operator", "alice-correct-horse")}, 1)
    (mount / "credentials").symlink_to("..data/credentials")
    env = {
        contract.ENV_DASHBOARD_AUTH: "basic",
        contract.ENV_DASHBOARD_CREDENTIALS_FILE: str(mount / "credentials"),
    }
    authenticator = BasicAuthenticator(load_dashboard_settings(env))

    class Request:
        def __init__(self, user: str, password: str) -> None:
            import base64

            self.headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    async def who(user: str, password: str) -> str | None:
        identity = await authenticator.authenticate(Request(user, password))  # type: ignore[arg-type]
        return identity.name if identity is not None else None

    assert asyncio.run(who("alice", "alice-correct-horse")) == "alice"
    publish({"bob": ("viewer", "bob-battery-staple")}, 2)
    deadline = time.monotonic() + 30
    while asyncio.run(who("bob", "bob-battery-staple")) != "bob":
        assert time.monotonic() < deadline, "the swapped-in users were never read"
        time.sleep(0.2)
    assert asyncio.run(who("alice", "alice-correct-horse")) is None, "a removed user is out at once"


# --- acceptance 2 ----------------------------------------------------------------------------------


def test_acceptance_2_dev_renders_an_internal_dashboard(tmp_path: Path) -> None:
    """Issue 12, acceptance 2: with the dev stack rendered, the dashboard's Service is ClusterIP, not
    selected by the web Service, and covered by a NetworkPolicy."""
    result = killsafe("render", "--stack", "dev", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    objects = read_rendered(tmp_path / "kubernetes")
    by_kind: dict[str, list[Manifest]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    (deployment,) = [
        d for d in by_kind["Deployment"] if d["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard"
    ]
    dashboard_pods = deployment["spec"]["template"]["metadata"]["labels"]
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]

    (service,) = [s for s in by_kind["Service"] if service_selects(s, dashboard_pods)]
    print(f"dashboard Service {service['metadata']['name']}: type {service['spec']['type']}")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["name"] == "emails-dashboard"

    (web,) = [s for s in by_kind["Service"] if s["metadata"]["name"] == "emails-web"]
    web_selects = service_selects(web, dashboard_pods)
    print(f"web Service selector {web['spec']['selector']}: selects the dashboard pods {web_selects}")
    assert not web_selects

    covering = [
        p
        for p in by_kind["NetworkPolicy"]
        if matches(p["spec"]["podSelector"], dashboard_pods) and "Ingress" in p["spec"]["policyTypes"]
    ]
    print(f"NetworkPolicies selecting the dashboard pods: {sorted(p['metadata']['name'] for p in covering)}")
    assert {p["metadata"]["name"] for p in covering} == {"emails-default-deny", "emails-dashboard"}
    rules = [rule for p in covering for rule in p["spec"].get("ingress", [])]
    assert rules == [], f"dev lists nobody in dashboard.allowed_from: only port-forward reaches port {port}"


def test_the_readme_documents_what_kubernetes_renders() -> None:
    import re

    readme = (REPO / "README.md").read_text()
    section = readme.split("### The dashboard on Kubernetes\n", 1)[1].split("\n### ", 1)[0]
    text = " ".join(section.split())
    spec = stack_spec("dev")
    manifests = build.build_manifests(spec)
    startup = container(manifests, "Deployment", "emails-dashboard")["startupProbe"]
    assert f"allows {STARTUP_CPU_SECONDS:g} CPU-seconds" in text
    assert f"({startup['periodSeconds'] * startup['failureThreshold']} s at the default 100m" in text
    assert "**One replica, `strategy: Recreate`**" in text and "**No PodDisruptionBudget**" in text
    [forward] = re.findall(r"```sh\n(.*?)```", section, re.S)
    port_forward = (
        f"kubectl -n {spec.kubernetes.namespace} port-forward svc/{dashboard_name(spec)} {spec.dashboard.port}"
    )
    assert forward.startswith(port_forward)
    [step] = dashboard_prerequisites(spec)
    command = text.split("prints the command, `", 1)[1].split("`", 1)[0]
    assert command in step
    [proxy] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    raw = {"target": "kubernetes", "workload": {**BASE, **yaml.safe_load(proxy)}}
    stack = parse_stack_config(raw, "README.md")
    proxied = build.build_manifests(stack.workload)
    policy = find(proxied, "NetworkPolicy", "emails-dashboard")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "oauth2-proxy"}}}
    ]
    loopback = {**yaml.safe_load(proxy)["dashboard"]}
    loopback["auth"] = {key: value for key, value in loopback["auth"].items() if key != "trusted_proxies"}
    assert "trusts loopback only" in kubernetes_error(loopback)
