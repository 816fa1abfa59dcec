"""Exact values, field by field: each spec field lands in exactly the manifest field it drives."""

from __future__ import annotations

import json

import pytest

from killsafe import contract
from killsafe.kubernetes.build import build_manifests
from tests.kubernetes.k8s_specs import (
    DIGEST,
    container,
    env_of,
    find,
    kinds_and_names,
    make_spec,
    stack_spec,
)


def test_worker_shutdown_budget_reaches_grace_period_and_env() -> None:
    manifests = build_manifests(
        make_spec(
            worker={
                "max_job_seconds": 120,
                "drain_margin_seconds": 15,
                "lock_duration_seconds": 40,
                "stalled_interval_seconds": 20,
                "concurrency_per_queue": 7,
                "health_port": 9090,
                "queues": ["emails", "emails-bulk"],
                "liveness_stall_seconds": 600,
            }
        )
    )
    worker = find(manifests, "Deployment", "emails-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135
    env = env_of(container(manifests, "Deployment", "emails-worker"))
    assert env[contract.ENV_SHUTDOWN_TIMEOUT_SECONDS] == "130"
    assert env[contract.ENV_LOCK_DURATION_MS] == "40000"
    assert env[contract.ENV_STALLED_INTERVAL_MS] == "20000"
    assert env[contract.ENV_LIVENESS_STALL_SECONDS] == "600"
    assert env[contract.ENV_QUEUES] == "emails,emails-bulk"
    assert env[contract.ENV_CONCURRENCY_PER_QUEUE] == "7"
    assert env[contract.ENV_HEALTH_PORT] == "9090"
    assert env[contract.ENV_STARTUP_TIMEOUT_SECONDS] == str(contract.DEFAULT_STARTUP_TIMEOUT_SECONDS)
    assert env[contract.ENV_REDIS_URL_FILE] == f"{contract.SECRETS_MOUNT_DIR}/{contract.REDIS_URL_SECRET_KEY}"


def test_liveness_stall_defaults_to_the_kill_deadline_when_jobs_are_long() -> None:
    env = env_of(container(build_manifests(make_spec(worker={"max_job_seconds": 900})), "Deployment", "emails-worker"))
    assert env[contract.ENV_LIVENESS_STALL_SECONDS] == "915"


def test_worker_probes_use_the_health_port_and_contract_paths() -> None:
    worker = container(build_manifests(make_spec(worker={"health_port": 9191})), "Deployment", "emails-worker")
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9191, "scheme": "HTTP"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 9191, "scheme": "HTTP"}
    assert worker["startupProbe"]["httpGet"]["port"] == 9191
    assert worker["ports"] == [{"name": "health", "containerPort": 9191, "protocol": "TCP"}]
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= contract.DEFAULT_STARTUP_TIMEOUT_SECONDS + 10


def test_worker_resources_are_guaranteed_and_exact() -> None:
    worker = container(
        build_manifests(make_spec(worker={"memory_mib": 512, "cpu_millicores": 500})), "Deployment", "emails-worker"
    )
    assert worker["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }


def test_replicas_and_rollout_never_drop_capacity() -> None:
    manifests = build_manifests(make_spec(web={"replicas": 3}, worker={"replicas": 12}))
    web, worker = find(manifests, "Deployment", "emails-web"), find(manifests, "Deployment", "emails-worker")
    assert web["spec"]["replicas"] == 3 and worker["spec"]["replicas"] == 12
    assert web["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert worker["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 3}


def test_both_tiers_run_the_one_image_with_their_own_command() -> None:
    manifests = build_manifests(make_spec(web={"command": ["app", "web"]}, worker={"command": ["app", "work"]}))
    web, worker = container(manifests, "Deployment", "emails-web"), container(manifests, "Deployment", "emails-worker")
    assert web["image"] == worker["image"] == "ghcr.io/acme/emails:1.4.2"
    assert web["command"] == ["app", "web"] and worker["command"] == ["app", "work"]
    assert web["imagePullPolicy"] == worker["imagePullPolicy"] == "Always"  # a tag may be re-pushed
    pinned = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}"))
    assert container(pinned, "Deployment", "emails-worker")["imagePullPolicy"] == "IfNotPresent"


def test_web_budget_prestop_sleep_probes_and_env() -> None:
    manifests = build_manifests(
        make_spec(
            web={
                "port": 8081,
                "prestop_seconds": 7,
                "max_request_seconds": 20,
                "replicas": 2,
                "memory_mib": 300,
                "cpu_millicores": 150,
            },
            env={"LOG_FORMAT": "json"},
        )
    )
    web_pod = find(manifests, "Deployment", "emails-web")["spec"]["template"]["spec"]
    assert web_pod["terminationGracePeriodSeconds"] == 7 + 20 + 5
    [web] = web_pod["containers"]
    assert web["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081, "scheme": "HTTP"}
    assert web["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 8081, "scheme": "HTTP"}
    assert web["resources"]["limits"] == {"cpu": "150m", "memory": "300Mi"}
    env = env_of(web)
    assert env[contract.ENV_WEB_PORT] == "8081"
    assert env[contract.ENV_QUEUES] == "emails"
    assert env[contract.ENV_SHUTDOWN_TIMEOUT_SECONDS] == "20"
    assert env["LOG_FORMAT"] == "json"
    assert env_of(container(manifests, "Deployment", "emails-worker"))["LOG_FORMAT"] == "json"
    service = find(manifests, "Service", "emails-web")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == find(manifests, "Deployment", "emails-web")["spec"]["selector"]["matchLabels"]


def test_zero_prestop_means_no_prestop_hook() -> None:
    web = container(build_manifests(make_spec(web={"prestop_seconds": 0})), "Deployment", "emails-web")
    assert "lifecycle" not in web


def test_labels_are_the_recommended_set_and_selectors_omit_the_version() -> None:
    manifests = build_manifests(make_spec(image="ghcr.io/acme/emails:2.0.1"))
    worker = find(manifests, "Deployment", "emails-worker")
    assert worker["metadata"]["labels"] == {
        "app.kubernetes.io/name": "emails",
        "app.kubernetes.io/instance": "emails",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": "emails",
        "app.kubernetes.io/managed-by": "killsafe",
        "app.kubernetes.io/version": "2.0.1",
    }
    assert worker["spec"]["template"]["metadata"]["labels"] == worker["metadata"]["labels"]
    assert worker["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "emails",
        "app.kubernetes.io/instance": "emails",
        "app.kubernetes.io/component": "worker",
    }
    redis = find(manifests, "StatefulSet", "emails-redis")
    assert redis["metadata"]["labels"]["app.kubernetes.io/name"] == "redis"
    assert redis["metadata"]["labels"]["app.kubernetes.io/version"] == "7.2.5-alpine"
    assert find(manifests, "Deployment", "emails-web")["metadata"]["labels"]["app.kubernetes.io/component"] == "web"
    digest_only = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}"))
    assert find(digest_only, "Deployment", "emails-worker")["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "sha256-abababababab"
    )


def test_upgrading_the_image_keeps_every_selector() -> None:
    """Selectors are immutable in the API: an upgrade that changed one could never be applied."""

    def selectors(image: str) -> list[object]:
        found = []
        for m in build_manifests(make_spec(image=image, redis={"image": image})):
            spec = m.get("spec", {})
            found.append(spec.get("selector"))
            found.append(spec.get("podSelector"))
            found.append(spec.get("volumeClaimTemplates"))
        return found

    assert selectors("ghcr.io/acme/emails:1.0.0") == selectors("ghcr.io/acme/emails:9.9.9")


@pytest.mark.parametrize("namespace", ["emails-dev", "default"])
def test_every_object_lives_in_the_spec_namespace(namespace: str) -> None:
    manifests = build_manifests(make_spec(kubernetes={"namespace": namespace}))
    for m in manifests:
        if m["kind"] == "Namespace":
            assert m["metadata"]["name"] == namespace
        else:
            assert m["metadata"]["namespace"] == namespace, m["metadata"]["name"]
    assert any(m["kind"] == "Namespace" for m in manifests) == (namespace != "default")


def test_namespace_enforces_pod_security_restricted() -> None:
    ns = find(build_manifests(make_spec()), "Namespace", "emails-test")
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_service_account_has_no_token_and_every_pod_uses_it() -> None:
    manifests = build_manifests(make_spec())
    sa = find(manifests, "ServiceAccount", "emails")
    assert sa["automountServiceAccountToken"] is False
    pods = [m["spec"]["template"]["spec"] for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    assert len(pods) == 3
    assert all(p["serviceAccountName"] == "emails" and p["automountServiceAccountToken"] is False for p in pods)


def test_order_is_dependencies_first_and_output_is_deterministic() -> None:
    spec = stack_spec("dev")
    first = build_manifests(spec)
    assert [k for k, _ in kinds_and_names(first)] == [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Service",
        "Service",
        "StatefulSet",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodMonitor",
        "PrometheusRule",
        "ConfigMap",
    ]
    assert json.dumps(first, sort_keys=False) == json.dumps(build_manifests(spec), sort_keys=False)
    json.dumps(first, allow_nan=False)  # plain JSON-able data only


@pytest.mark.parametrize(
    ("field", "removed_kind"),
    [
        ("network_policies", "NetworkPolicy"),
        ("pod_disruption_budgets", "PodDisruptionBudget"),
        ("create_namespace", "Namespace"),
    ],
)
def test_each_opt_out_removes_exactly_its_objects(field: str, removed_kind: str) -> None:
    full = kinds_and_names(build_manifests(make_spec()))
    reduced = kinds_and_names(build_manifests(make_spec(kubernetes={field: False})))
    assert any(kind == removed_kind for kind, _ in full)
    assert reduced == [(kind, name) for kind, name in full if kind != removed_kind]


def test_pod_disruption_budgets_evict_one_at_a_time_per_tier() -> None:
    manifests = build_manifests(make_spec())
    for name, component in (("emails-web", "web"), ("emails-worker", "worker"), ("emails-redis", "redis")):
        pdb = find(manifests, "PodDisruptionBudget", name)
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        workload = next(
            m for m in manifests if m["kind"] in ("Deployment", "StatefulSet") and m["metadata"]["name"] == name
        )
        assert pdb["spec"]["selector"] == workload["spec"]["selector"]


def test_worker_only_spec_has_no_web_objects() -> None:
    names = kinds_and_names(build_manifests(make_spec(web=None)))
    assert not [n for n in names if n[1] == "emails-web"]
    assert ("Deployment", "emails-worker") in names


def test_in_cluster_redis_objects_and_config() -> None:
    manifests = build_manifests(
        make_spec(redis={"memory_mib": 1000, "cpu_millicores": 300, "storage_gib": 5, "storage_class": "fast-ssd"})
    )
    conf = find(manifests, "ConfigMap", "emails-redis-config")["data"]["redis.conf"].splitlines()
    for line in (
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        "dir /data",
        "maxmemory 700mb",
        f"port {contract.REDIS_PORT}",
    ):
        assert line in conf
    sts = find(manifests, "StatefulSet", "emails-redis")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "emails-redis-headless"
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    [redis] = sts["spec"]["template"]["spec"]["containers"]
    assert redis["image"] == "redis:7.2.5-alpine"
    assert redis["resources"]["limits"] == {"cpu": "300m", "memory": "1000Mi"}
    assert {"readinessProbe", "livenessProbe"} <= set(redis)
    assert "env" not in redis  # the password comes from a mounted file, not the environment
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["redis-credentials"]["secret"]["secretName"] == "emails-redis-auth"
    assert volumes["redis-credentials"]["secret"]["items"] == [{"key": "password", "path": "password"}]
    headless = find(manifests, "Service", "emails-redis-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert find(manifests, "Service", "emails-redis")["spec"]["ports"][0]["port"] == contract.REDIS_PORT
    without_class = build_manifests(make_spec())
    [claim] = find(without_class, "StatefulSet", "emails-redis")["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"]


def test_redis_config_change_rolls_the_redis_pod() -> None:
    def conf_hash(memory: int) -> str:
        sts = find(build_manifests(make_spec(redis={"memory_mib": memory})), "StatefulSet", "emails-redis")
        return str(sts["spec"]["template"]["metadata"]["annotations"]["killsafe.io/redis-conf-sha256"])

    assert conf_hash(256) != conf_hash(512)


def test_external_redis_emits_no_redis_objects_and_mounts_the_existing_secret() -> None:
    manifests = build_manifests(
        make_spec(redis={"mode": "external", "url_secret": {"name": "shared-redis", "key": "connection"}})
    )
    assert not [n for n in kinds_and_names(manifests) if "redis" in n[1]]
    for name in ("emails-web", "emails-worker"):
        pod = find(manifests, "Deployment", name)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if "secret" in v)
        assert volume["secret"]["secretName"] == "shared-redis"
        assert volume["secret"]["items"] == [{"key": "connection", "path": "url"}]
        [c] = pod["containers"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
        assert mount == {"name": volume["name"], "mountPath": contract.SECRETS_MOUNT_DIR, "readOnly": True}
        assert env_of(c)[contract.ENV_REDIS_URL_FILE] == f"{contract.SECRETS_MOUNT_DIR}/url"


def test_in_cluster_workloads_mount_only_the_url_key() -> None:
    pod = find(build_manifests(make_spec()), "Deployment", "emails-worker")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "emails-redis-auth"
    assert volume["secret"]["items"] == [{"key": contract.REDIS_URL_SECRET_KEY, "path": "url"}]


def test_checkov_suppressions_only_when_justified() -> None:
    tagged = build_manifests(make_spec())
    worker_meta = find(tagged, "Deployment", "emails-worker")["metadata"]
    assert list(worker_meta["annotations"]) == ["checkov.io/skip1"]
    assert worker_meta["annotations"]["checkov.io/skip1"].startswith("CKV_K8S_43=")
    assert "annotations" not in find(tagged, "Service", "emails-web")["metadata"]
    pinned = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}", redis={"image": f"redis@{DIGEST}"}))
    assert not [m for m in pinned if "annotations" in m["metadata"]]
    in_default = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}", kubernetes={"namespace": "default"}))
    service = find(in_default, "Service", "emails-web")
    assert next(iter(service["metadata"]["annotations"].values())).startswith("CKV_K8S_21=")
    unguarded = build_manifests(make_spec(kubernetes={"network_policies": False}))
    annotated = {
        m["metadata"]["name"]: m["metadata"]["annotations"]["checkov.io/skip2"]
        for m in unguarded
        if "checkov.io/skip2" in m["metadata"].get("annotations", {})
    }
    assert set(annotated) == {"emails-web", "emails-worker", "emails-redis"}  # the objects that run pods
    assert all(reason.startswith("CKV2_K8S_6=") for reason in annotated.values())
