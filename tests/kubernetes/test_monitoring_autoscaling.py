"""Monitoring and autoscaling objects on Kubernetes: CRD schemas (unknown fields rejected), what
`killsafe render --stack staging` writes, the HPA-owned replica count, credentials, opt-outs, and the
redis_exporter's password handling run for real (its init script under sh, the Debian exporter).

CRD schemas: the pinned pydantic models generated from the CRDs (PyPI cloudcoil-models-keda 2.16.1,
KEDA 2.16; cloudcoil-models-prometheus-operator 0.80.1). A manifest is valid when the model accepts
it and gives back exactly the same document: a field the CRD does not know is dropped by the model,
so the round trip shows it (and a value of the wrong type fails validation or changes).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel, ValidationError

from killsafe import contract
from killsafe.budget import shutdown_budget
from killsafe.config import ConfigError, parse_stack_config
from killsafe.kubernetes import redis_exporter
from killsafe.kubernetes.build import build_manifests, redis_secret_name
from killsafe.observability.autoscaling import backlog_keys
from tests.conftest import REPO, free_port, require
from tests.kubernetes.k8s_specs import find, make_spec, stack_spec, variants

CRD_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
}
KILLSAFE = str(REPO / ".venv" / "bin" / "killsafe")


def _first_difference(expected: Any, got: Any, path: str = "") -> str | None:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got)):
            if key not in got:
                return f"{path}.{key}: not in the CRD schema (dropped)"
            if key not in expected:
                return f"{path}.{key}: added by the model"
            found = _first_difference(expected[key], got[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for index, (e, g) in enumerate(zip(expected, got, strict=True)):
            found = _first_difference(e, g, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if expected == got and type(expected) is type(got) else f"{path}: {expected!r} became {got!r}"


def crd_errors(manifest: dict[str, Any]) -> str | None:
    """None when `manifest` is valid against its CRD with unknown fields rejected, else the first error."""
    model = CRD_MODELS[(manifest["apiVersion"], manifest["kind"])]
    try:
        parsed = model.model_validate(manifest)
    except ValidationError as err:
        return str(err)
    return _first_difference(manifest, parsed.model_dump(by_alias=True, exclude_unset=True, mode="json"))


def custom_resources(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["apiVersion"] not in ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1")]


@pytest.mark.parametrize("variant", sorted(variants()))
def test_every_custom_resource_matches_its_crd_schema(variant: str) -> None:
    resources = custom_resources(build_manifests(variants()[variant]))
    for manifest in resources:
        assert (manifest["apiVersion"], manifest["kind"]) in CRD_MODELS, manifest["kind"]
        assert crd_errors(manifest) is None, (
            f"{manifest['kind']}/{manifest['metadata']['name']}: {crd_errors(manifest)}"
        )


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("ScaledObject", lambda m: m["spec"].__setitem__("pollingInterva1", 15)),
        ("ScaledObject", lambda m: m["spec"]["advanced"]["scalingModifiers"].__setitem__("formulae", "x")),
        ("ScaledObject", lambda m: m["spec"].__setitem__("minReplicaCount", "none")),
        ("TriggerAuthentication", lambda m: m["spec"]["secretTargetRef"][0].__setitem__("secret", "x")),
        ("PodMonitor", lambda m: m["spec"]["podMetricsEndpoints"][0].__setitem__("targetPort2", 1)),
        ("PrometheusRule", lambda m: m["spec"]["groups"][0]["rules"][0].__setitem__("for_", "1m")),
    ],
)
def test_the_schema_check_rejects_unknown_fields_and_wrong_types(kind: str, breakage: Any) -> None:
    manifest = copy.deepcopy(next(m for m in build_manifests(stack_spec("staging")) if m["kind"] == kind))
    breakage(manifest)
    assert crd_errors(manifest) is not None


def test_render_staging_writes_the_autoscaling_and_monitoring_objects(tmp_path: Path) -> None:
    """Acceptance: ScaledObject, TriggerAuthentication, PrometheusRule, PodMonitor and dashboard
    ConfigMap, schema-valid, and a worker Deployment without `replicas`."""
    result = subprocess.run(
        [KILLSAFE, "render", "--stack", "staging", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    docs = [yaml.safe_load(p.read_text()) for p in sorted((tmp_path / "kubernetes").glob("*.yaml"))]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("ScaledObject", "emails-worker"),
        ("TriggerAuthentication", "emails-worker-redis"),
        ("PrometheusRule", "emails-alerts"),
        ("PodMonitor", "emails-worker"),
        ("PodMonitor", "emails-redis-exporter"),
        ("ConfigMap", "emails-dashboard"),
    } <= kinds
    for doc in custom_resources(docs):
        assert crd_errors(doc) is None, doc["kind"]
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "emails-worker")
    assert "replicas" not in worker["spec"]
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "emails-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_hpa_owns_the_replica_count_only_when_autoscaling() -> None:
    fixed = find(build_manifests(make_spec(worker={"replicas": 4})), "Deployment", "emails-worker")
    assert fixed["spec"]["replicas"] == 4
    scaled = build_manifests(make_spec(worker={"autoscaling": {"max_replicas": 4}}))
    assert "replicas" not in find(scaled, "Deployment", "emails-worker")["spec"]
    assert not [m for m in build_manifests(make_spec()) if m["kind"] in ("ScaledObject", "TriggerAuthentication")]


def test_scaled_object_counts_every_waiting_state_of_every_queue_with_the_key_prefix() -> None:
    spec = make_spec(
        redis={"key_prefix": "shop"},
        worker={"queues": ["emails", "emails-bulk"], "concurrency_per_queue": 5, "autoscaling": {"max_replicas": 9}},
    )
    manifests = build_manifests(spec)
    scaled = find(manifests, "ScaledObject", "emails-worker")["spec"]
    keys = {t["name"]: t["metadata"]["listName"] for t in scaled["triggers"]}
    assert keys == {
        "q0_waiting": "shop:emails:wait",
        "q0_prioritized": "shop:emails:prioritized",
        "q0_active": "shop:emails:active",
        "q0_delayed": "shop:emails:delayed",
        "q1_waiting": "shop:emails-bulk:wait",
        "q1_prioritized": "shop:emails-bulk:prioritized",
        "q1_active": "shop:emails-bulk:active",
        "q1_delayed": "shop:emails-bulk:delayed",
    }
    modifiers = scaled["advanced"]["scalingModifiers"]
    assert modifiers["formula"] == (
        "q0_waiting + q0_prioritized + q0_active + (q0_delayed > 0 ? 1 : 0) + "
        "q1_waiting + q1_prioritized + q1_active + (q1_delayed > 0 ? 1 : 0)"
    )
    assert modifiers["target"] == "10"  # concurrency_per_queue (5) x 2 queues: one worker's capacity
    assert modifiers["activationTarget"] == "0" and modifiers["metricType"] == "AverageValue"
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "emails-worker"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 9)
    assert scaled["cooldownPeriod"] >= shutdown_budget(spec.worker).kill_deadline_seconds
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"
    ] == (300)
    assert [k.key for k in backlog_keys(spec)] == [t["metadata"]["listName"] for t in scaled["triggers"]]
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"] == "emails-redis.emails-test.svc:6379"
        assert trigger["authenticationRef"] == {"name": "emails-worker-redis"}
        assert not {"password", "passwordFromEnv", "usernameFromEnv"} & set(trigger["metadata"])


def test_keda_reads_redis_credentials_from_the_existing_secret_never_inline() -> None:
    in_cluster = make_spec(worker={"autoscaling": {"max_replicas": 3}})
    auth = find(build_manifests(in_cluster), "TriggerAuthentication", "emails-worker-redis")
    assert auth["spec"] == {
        "secretTargetRef": [
            {"parameter": "password", "name": redis_secret_name(in_cluster), "key": contract.REDIS_PASSWORD_SECRET_KEY}
        ]
    }
    external = variants()["external-redis"]
    manifests = build_manifests(external)
    auth = find(manifests, "TriggerAuthentication", "emails-worker-redis")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "address", "name": "shared-redis-keda", "key": "address"},
        {"parameter": "password", "name": "shared-redis-keda", "key": "password"},
    ]
    for trigger in find(manifests, "ScaledObject", "emails-worker")["spec"]["triggers"]:
        assert "address" not in trigger["metadata"] and trigger["metadata"]["enableTLS"] == "true"


def test_redis_admits_the_keda_operator_and_the_exporter_only_when_they_exist() -> None:
    def redis_ingress(spec_overrides: dict[str, Any]) -> list[dict[str, Any]]:
        manifests = build_manifests(make_spec(**spec_overrides))
        return list(find(manifests, "NetworkPolicy", "emails-redis")["spec"]["ingress"])

    assert len(redis_ingress({})) == 1
    keda_rule, exporter_rule = redis_ingress(
        {
            "worker": {"autoscaling": {"max_replicas": 3}},
            "redis": {"exporter": {"enabled": True}},
            "kubernetes": {"keda_namespace": "autoscalers"},
        }
    )[1:]
    assert keda_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "autoscalers"}}}]
    assert exporter_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis-metrics"
    for rule in (keda_rule, exporter_rule):
        assert rule["ports"] == [{"protocol": "TCP", "port": contract.REDIS_PORT}]


def test_pod_monitor_scrapes_the_workers_metrics_port_and_the_rules_select_that_job() -> None:
    spec = make_spec(kubernetes={"monitoring_labels": {"release": "kube-prometheus-stack"}})
    manifests = build_manifests(spec)
    monitor = find(manifests, "PodMonitor", "emails-worker")
    worker = find(manifests, "Deployment", "emails-worker")
    [port] = worker["spec"]["template"]["spec"]["containers"][0]["ports"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == contract.METRICS_PATH
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    )
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule = find(manifests, "PrometheusRule", "emails-alerts")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for alert in rule["spec"]["groups"][0]["rules"]:
        if contract.METRIC_WORKER_READY in alert["expr"]:
            assert 'job="emails-test/emails-worker"' in alert["expr"]  # the operator's <namespace>/<PodMonitor>


def test_web_pods_get_their_own_pod_monitor_on_the_named_metrics_port() -> None:
    """A PodMonitor of its own: the web's `job` differs from the workers', so web pods never count as
    workers (WorkerDown counts `up` of the worker job)."""
    manifests = build_manifests(make_spec(kubernetes={"monitoring_labels": {"release": "kube-prometheus-stack"}}))
    monitor = find(manifests, "PodMonitor", "emails-web")
    web = find(manifests, "Deployment", "emails-web")
    pod_labels = web["spec"]["template"]["metadata"]["labels"]
    [web_container] = web["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in web_container["ports"]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == contract.WEB_METRICS_PORT and endpoint["path"] == contract.METRICS_PATH
    assert {e["name"]: e["value"] for e in web_container["env"]}[contract.ENV_WEB_METRICS_PORT] == str(
        contract.WEB_METRICS_PORT
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    worker_monitor = find(manifests, "PodMonitor", "emails-worker")
    worker_pods = find(manifests, "Deployment", "emails-worker")["spec"]["template"]["metadata"]["labels"]
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= worker_pods.items()
    assert not worker_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    worker_only = build_manifests(make_spec(web=None))
    assert [m["metadata"]["name"] for m in worker_only if m["kind"] == "PodMonitor"] == ["emails-worker"]


def test_dashboard_shows_web_traffic_and_server_errors_from_the_web_job() -> None:
    board = json.loads(next(iter(find(build_manifests(make_spec()), "ConfigMap", "emails-dashboard")["data"].values())))
    panels = {panel["title"]: [t["expr"] for t in panel.get("targets", [])] for panel in board["panels"]}
    [rate] = panels["Web requests"]
    [ratio] = panels["Web 5xx ratio"]
    assert contract.METRIC_WEB_REQUESTS in rate and 'job="emails-test/emails-web"' in rate
    assert 'status=~"5.."' in ratio and ratio.count(contract.METRIC_WEB_REQUESTS) == 2
    assert contract.METRIC_WEB_JOBS_SUBMITTED in panels["Jobs submitted by outcome"][0]
    worker_only = json.loads(
        next(iter(find(build_manifests(make_spec(web=None)), "ConfigMap", "emails-dashboard")["data"].values()))
    )
    assert not any(panel["title"].startswith("Web") for panel in worker_only["panels"])


def test_alert_expressions_name_metrics_from_the_contract_only() -> None:
    """Every killsafe_* series the rules or the dashboard read is a contract metric."""
    contract_metrics = {value for name, value in vars(contract).items() if name.startswith("METRIC_")}
    manifests = build_manifests(stack_spec("staging"))
    text = json.dumps(find(manifests, "PrometheusRule", "emails-alerts")) + json.dumps(
        find(manifests, "ConfigMap", "emails-dashboard")
    )
    used = set(re.findall(r"killsafe_[a-z_]+", text))
    histogram_parts = {f"{contract.METRIC_JOB_DURATION}_bucket"}
    assert used - histogram_parts <= contract_metrics, used - contract_metrics
    assert {contract.METRIC_QUEUE_JOBS, contract.METRIC_JOBS_COMPLETED, contract.METRIC_JOBS_FAILED} <= used


def test_dashboard_covers_depth_throughput_failures_durations_interruptions_restarts_readiness() -> None:
    manifests = build_manifests(stack_spec("staging"))
    config_map = find(manifests, "ConfigMap", "emails-dashboard")
    [(key, text)] = config_map["data"].items()
    assert key.endswith(".json")
    board = json.loads(text)
    titles = {panel["title"] for panel in board["panels"]}
    assert {
        "Jobs by state",
        "Throughput",
        "Failure ratio",
        "Job duration",
        "Interrupted jobs by reason",
        "Worker restarts",
        "Workers ready",
        "Redis memory",
    } <= titles
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert all('namespace="emails-staging"' in e or "kube_" in e or "redis_" in e for e in exprs)
    assert len(board["uid"]) <= 40


@pytest.mark.parametrize(
    ("overrides", "absent"),
    [
        ({"kubernetes": {"prometheus_operator": False}}, {"PodMonitor", "PrometheusRule"}),
        ({"alerts": {"enabled": False}}, {"PrometheusRule"}),
        ({"kubernetes": {"grafana_dashboard": False}}, {"dashboard"}),
    ],
)
def test_each_monitoring_opt_out_removes_exactly_its_objects(overrides: dict[str, Any], absent: set[str]) -> None:
    def names(manifests: list[dict[str, Any]]) -> set[str]:
        return {"dashboard" if m["metadata"]["name"].endswith("-dashboard") else m["kind"] for m in manifests}

    full = build_manifests(make_spec())
    reduced = build_manifests(make_spec(**overrides))
    assert names(full) - names(reduced) == absent
    assert len(full) - len(reduced) == len([m for m in full if m not in reduced])


def test_dashboard_goes_to_the_grafana_namespace_when_given() -> None:
    spec = make_spec(kubernetes={"grafana_dashboard_namespace": "grafana"})
    config_map = find(build_manifests(spec), "ConfigMap", "emails-dashboard")
    assert config_map["metadata"]["namespace"] == "grafana"


# --- the redis_exporter, for real ---------------------------------------------------------------


def test_exporter_never_gets_the_password_in_env_or_args() -> None:
    manifests = build_manifests(stack_spec("staging"))
    pod = find(manifests, "Deployment", "emails-redis-exporter")["spec"]["template"]["spec"]
    for c in pod["containers"] + pod["initContainers"]:
        assert "env" not in c and "envFrom" not in c
    [exporter] = pod["containers"]
    assert "command" not in exporter, "args only: the image's entrypoint stays in charge"
    assert any(a.startswith("-redis.password-file=") for a in exporter["args"])
    [volume] = [v for v in pod["volumes"] if "emptyDir" in v]
    assert volume["emptyDir"]["medium"] == "Memory"


def test_exporter_reads_the_mounted_password_and_scrapes_a_real_redis(tmp_path: Path) -> None:
    """The init container's script (run by sh) turns the Secret file into the password map, and the
    Debian redis_exporter started with the Deployment's own args (paths moved into tmp) logs in."""
    exporter_bin = require("prometheus-redis-exporter", "apt prometheus-redis-exporter")
    password = "0123456789abcdef" * 4
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = subprocess.Popen(
        [
            require("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(redis_dir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--requirepass",
            password,
        ],
        stdout=subprocess.DEVNULL,
    )
    spec = stack_spec("staging")
    address = f"redis://127.0.0.1:{port}"
    secret_file = tmp_path / "password"
    secret_file.write_text(password)  # as kubectl --from-literal stores it: no trailing newline
    out_file = tmp_path / "passwords.json"
    script = redis_exporter.password_file_script(address, str(secret_file), str(out_file))
    manifest_script = find(build_manifests(spec), "Deployment", "emails-redis-exporter")["spec"]["template"]["spec"][
        "initContainers"
    ][0]["command"][2]
    assert manifest_script == redis_exporter.password_file_script(
        redis_exporter.redis_address(spec),
        f"{contract.SECRETS_MOUNT_DIR}/{contract.REDIS_PASSWORD_SECRET_KEY}",
        redis_exporter.PASSWORDS_FILE,
    )
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    assert json.loads(out_file.read_text()) == {address: password}
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"

    listen = free_port()
    args = [
        a.replace(redis_exporter.redis_address(spec), address)
        .replace(redis_exporter.PASSWORDS_FILE, str(out_file))
        .replace(f":{redis_exporter.PORT}", f"127.0.0.1:{listen}")
        for a in redis_exporter.exporter_args(spec)
    ]
    exporter = subprocess.Popen([exporter_bin, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as response:
                    body = response.read().decode()
                if "\nredis_up 1" in body:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert "\nredis_up 1" in body, body[-2000:]
        assert 'redis_config_key_value{key="maxmemory-policy",value="noeviction"} 1' in body
        assert password not in body
        with open(f"/proc/{exporter.pid}/cmdline", "rb") as cmdline:
            assert password.encode() not in cmdline.read()
        assert password not in open(f"/proc/{exporter.pid}/environ", "rb").read().decode(errors="replace")  # noqa: SIM115
    finally:
        exporter.kill()
        exporter.wait(timeout=10)
        redis.kill()
        redis.wait(timeout=10)


def test_password_script_refuses_a_password_json_would_need_escaping(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text('bad"quote')
    out_file = tmp_path / "passwords.json"
    script = redis_exporter.password_file_script("redis://x:6379", str(secret_file), str(out_file))
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert result.returncode == 1 and "quote or backslash" in result.stderr
    assert not out_file.exists()


# --- spec errors -----------------------------------------------------------------------------------


def _error(workload_overrides: dict[str, Any]) -> str:
    workload = make_spec().model_dump(mode="json", exclude_unset=True)
    for key, value in workload_overrides.items():
        workload[key] = {**workload.get(key, {}), **value}
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({"target": "kubernetes", "workload": workload}, "stacks/Pulumi.bad.yaml")
    [issue] = caught.value.issues
    return str(issue)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"worker": {"replicas": 3, "autoscaling": {"max_replicas": 5}}},
            "killsafe:workload.worker.replicas: 3 conflicts with autoscaling",
        ),
        (
            {"worker": {"autoscaling": {"min_replicas": 6, "max_replicas": 5}}},
            "killsafe:workload.worker.autoscaling.min_replicas: 6 is above max_replicas (5)",
        ),
        (
            {"worker": {"autoscaling": {"max_replicas": 0}}},
            "killsafe:workload.worker.autoscaling.max_replicas: 0 must be >= 1",
        ),
        (
            {"redis": {"mode": "external", "url_secret": {"name": "r"}, "exporter": {"enabled": True}}},
            "killsafe:workload.redis.exporter.enabled: true runs an exporter only for the Redis killsafe runs",
        ),
        (
            {
                "redis": {"mode": "external", "url_secret": {"name": "r"}},
                "worker": {"autoscaling": {"max_replicas": 5}},
            },
            "killsafe:workload.kubernetes.keda_redis_secret: is required for worker.autoscaling with redis mode",
        ),
        ({"alerts": {"labels": {"severity": "page"}}}, "killsafe:workload.alerts.labels: "),
        ({"alerts": {"redis_memory_percent": 100}}, "killsafe:workload.alerts.redis_memory_percent: 100 must be <= 99"),
        ({"alerts": {"stalled_minutes": 0}}, "killsafe:workload.alerts.stalled_minutes: 0 must be >= 1"),
        ({"alerts": {"runbook_base_url": "wiki/runbooks"}}, "killsafe:workload.alerts.runbook_base_url: wiki/runbooks"),
    ],
)
def test_bad_observability_settings_name_the_field_and_the_fix(overrides: dict[str, Any], expected: str) -> None:
    message = _error(overrides)
    assert message.startswith(f"stacks/Pulumi.bad.yaml: {expected}"), message
    assert os.linesep not in message


# --- the component creates them as render writes them ----------------------------------------------


def test_component_creates_each_custom_resource_as_built_under_mocks() -> None:
    """The parity test covers every object; this pins the custom resources' Pulumi types and order."""
    from killsafe.kubernetes.component import KubernetesWorkload
    from tests.kubernetes.test_component import canonical, k8s_children, run_under_mocks, wire_json

    spec = stack_spec("staging")
    run = run_under_mocks(lambda: KubernetesWorkload(spec.name, spec))
    assert run.error is None
    created = {(r.inputs["kind"], r.inputs["metadata"]["name"]): r for r in k8s_children(run)}
    for manifest in custom_resources(build_manifests(spec)):
        child = created[(manifest["kind"], manifest["metadata"]["name"])]
        assert child.type == f"kubernetes:{manifest['apiVersion']}:{manifest['kind']}"
        assert canonical(wire_json(child.inputs)) == canonical(manifest)
    order = [(r.inputs["kind"], r.inputs["metadata"]["name"]) for r in k8s_children(run)]
    assert order.index(("TriggerAuthentication", "emails-worker-redis")) < order.index(
        ("ScaledObject", "emails-worker")
    )
