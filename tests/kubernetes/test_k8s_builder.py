"""Exact values, field by field: each spec field lands in exactly the manifest field it drives."""

from __future__ import annotations

import json
import re

import pytest

from killsafe import contract
from killsafe.config import ConfigError, parse_stack_config
from killsafe.kubernetes.build import build_manifests
from tests.kubernetes.k8s_specs import (
    BASE,
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
    assert worker["startupProbe"]["httpGet"] == {"path": "/livez", "port": 9191, "scheme": "HTTP"}
    assert worker["ports"] == [{"name": "health", "containerPort": 9191, "protocol": "TCP"}]


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
    assert web["args"] == ["app", "web"] and worker["args"] == ["app", "work"]
    assert web["imagePullPolicy"] == worker["imagePullPolicy"] == "Always"  # a tag may be re-pushed
    pinned = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}"))
    assert container(pinned, "Deployment", "emails-worker")["imagePullPolicy"] == "IfNotPresent"


def test_command_is_args_so_the_image_entrypoint_stays_pid_1() -> None:
    """Issue 7.1: `command:` would replace the image's ENTRYPOINT (dumb-init); the spec's command is CMD."""
    for variant in ("dev", "staging", "prod"):
        manifests = build_manifests(stack_spec(variant))
        for name in ("emails-web", "emails-worker"):
            c = container(manifests, "Deployment", name)
            assert "command" not in c, f"{variant} {name}: command replaces the image's ENTRYPOINT"
            assert c["args"] == [name.replace("emails-", "killsafe-")]
    overridden = build_manifests(
        make_spec(worker={"entrypoint": ["tini", "--"], "command": ["killsafe-worker"]}, web={"entrypoint": ["/app"]})
    )
    worker = container(overridden, "Deployment", "emails-worker")
    assert worker["command"] == ["tini", "--"] and worker["args"] == ["killsafe-worker"]
    web = container(overridden, "Deployment", "emails-web")
    assert web["command"] == ["/app"] and web["args"] == ["killsafe-web"]


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
    assert redis["metadata"]["labels"]["app.kubernetes.io/version"] == "7.2.16-alpine"
    assert find(manifests, "Deployment", "emails-web")["metadata"]["labels"]["app.kubernetes.io/component"] == "web"
    digest_only = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}"))
    assert find(digest_only, "Deployment", "emails-worker")["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "sha256-abababababab"
    )


def test_upgrading_the_image_keeps_every_selector() -> None:
    """Selectors are immutable in the API: an upgrade that changed one could never be applied."""

    def selectors(image: str) -> list[object]:
        found = []
        for m in build_manifests(
            make_spec(image=image, redis={"image": image.replace("acme/emails", "library/redis")})
        ):
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
        "Service",  # the dashboard's
        "StatefulSet",
        "Deployment",
        "Deployment",
        "Deployment",  # the dashboard's (one replica: no PodDisruptionBudget)
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",  # the dashboard's
        "PodMonitor",
        "PodMonitor",  # the web's metrics port
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
    assert redis["image"] == "docker.io/library/redis:7.2.16-alpine"
    assert redis["imagePullPolicy"] == "IfNotPresent"
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
    redis_meta = find(tagged, "StatefulSet", "emails-redis")["metadata"]
    assert [reason.split("=")[0] for reason in redis_meta["annotations"].values()] == ["CKV_K8S_43", "CKV_K8S_15"]
    assert "pulled IfNotPresent" in redis_meta["annotations"]["checkov.io/skip2"]
    assert "annotations" not in find(tagged, "Service", "emails-web")["metadata"]
    pinned = build_manifests(
        make_spec(image=f"ghcr.io/acme/emails@{DIGEST}", redis={"image": f"docker.io/library/redis:7.2.16@{DIGEST}"})
    )
    assert not [m for m in pinned if "annotations" in m["metadata"]]
    in_default = build_manifests(make_spec(image=f"ghcr.io/acme/emails@{DIGEST}", kubernetes={"namespace": "default"}))
    service = find(in_default, "Service", "emails-web")
    assert next(iter(service["metadata"]["annotations"].values())).startswith("CKV_K8S_21=")
    unguarded = build_manifests(
        make_spec(redis={"image": f"docker.io/library/redis@{DIGEST}"}, kubernetes={"network_policies": False})
    )
    annotated = {
        m["metadata"]["name"]: m["metadata"]["annotations"]["checkov.io/skip2"]
        for m in unguarded
        if "checkov.io/skip2" in m["metadata"].get("annotations", {})
    }
    assert set(annotated) == {"emails-web", "emails-worker"}  # the objects that run tagged images
    assert all(reason.startswith("CKV2_K8S_6=") for reason in annotated.values())
    redis_annotations = find(unguarded, "StatefulSet", "emails-redis")["metadata"]["annotations"]
    assert next(iter(redis_annotations.values())).startswith("CKV2_K8S_6=")


def test_redis_image_is_a_current_patch_fully_qualified_and_never_waits_on_the_registry() -> None:
    """Issue 7.6: redis:7.2.5-alpine (Lua CVEs fixed later in 7.2), a short name, pulled Always."""
    [redis] = find(build_manifests(make_spec()), "StatefulSet", "emails-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    registry, _, rest = redis["image"].partition("/")
    assert registry == "docker.io" and rest.startswith("library/redis:7.2.")
    patch = int(rest.removeprefix("library/redis:7.2.").split("-")[0])
    assert patch >= 11, "7.2.11 is the first 7.2 release with the fixes for CVE-2025-49844 and its siblings"
    assert redis["imagePullPolicy"] == "IfNotPresent"
    digest_pinned = f"docker.io/library/redis:7.2.16-alpine@{DIGEST}"
    pinned = find(build_manifests(make_spec(redis={"image": digest_pinned})), "StatefulSet", "emails-redis")
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"] == digest_pinned
    assert "annotations" not in pinned["metadata"]  # a digest satisfies checkov without suppressions


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("redis:7.2.16-alpine", "is a short name, which CRI-O refuses"),
        ("redis:7.2.16-alpine", "name the registry, e.g. docker.io/library/redis:7.2.16-alpine"),
        ("bitnami/redis:7.2.16", "e.g. docker.io/bitnami/redis:7.2.16"),
        ("docker.io/library/redis", "pin a tag or digest"),
        ("docker.io/library/redis:latest", "'latest' is not a version"),
    ],
)
def test_a_redis_image_that_is_not_qualified_and_pinned_is_a_clear_error(image: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        parse_stack_config({"workload": {**BASE, "redis": {"image": image}}}, "stack.yaml")
    assert str(raised.value).startswith(f"stack.yaml: killsafe:workload.redis.image: {image} ")
