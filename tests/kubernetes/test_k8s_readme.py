"""The README's Kubernetes sections say what the builder does (issue 7): every number and command in
them is checked against the code that produces it."""

from __future__ import annotations

import re

import yaml

from killsafe import contract
from killsafe.checks import MIN_MIB_PER_JOB, WORKER_BASELINE_MIB
from killsafe.kubernetes import probes
from killsafe.kubernetes.build import build_manifests, prerequisites
from killsafe.kubernetes.credentials import rollout_restart
from killsafe.spec import DEFAULT_REDIS_IMAGE, KubernetesSpec
from tests.conftest import REPO
from tests.kubernetes.k8s_specs import container, stack_spec

README = (REPO / "README.md").read_text()


def _section(title: str, level: str = "##") -> str:
    match = re.search(rf"^{level} {re.escape(title)}\n(.*?)(?=^#{{2,3}} )", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_command_is_documented_as_args() -> None:
    text = _flat(_section("What the Kubernetes target creates"))
    assert "becomes the container's **`args`**" in text and "stays PID 1" in text
    assert "explicit `entrypoint` in the spec becomes `command`" in text


def test_each_probe_is_documented_with_its_derived_timing() -> None:
    text = _flat(_section("Probes", "###"))
    for probe in ("| startup | `GET /livez` |", "| readiness | `GET /readyz` |", "| liveness | `GET /livez` |"):
        assert probe in text
    assert "never waits for Redis" in text and "never restart a pod because Redis is down" in text
    worker = container(build_manifests(stack_spec("staging")), "Deployment", "emails-worker")
    assert f"every {worker['startupProbe']['periodSeconds']} s" in text
    assert f"max({probes.STARTUP_MIN_WINDOW_SECONDS} s, {probes.STARTUP_CPU_SECONDS:g} CPU-seconds" in text
    assert f"{probes.startup_window_seconds(500)} s at 500m, {probes.startup_window_seconds(50)} s at 50m" in text
    readiness = worker["readinessProbe"]
    assert f"every {readiness['periodSeconds']} s, unready after {readiness['failureThreshold']} failures" in text
    liveness = worker["livenessProbe"]
    assert f"every {liveness['periodSeconds']} s, timeout {liveness['timeoutSeconds']} s" in text
    min_ready = probes.ProbeSet(1, 1, 1).min_ready_seconds
    assert f"`minReadySeconds` is one readiness failure window plus a period ({min_ready} s)" in text


def test_network_policy_example_is_valid_and_names_the_defaults() -> None:
    section = _section("Network policies", "###")
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    example = KubernetesSpec.model_validate(yaml.safe_load(block)["kubernetes"])
    assert example.egress and example.web_ingress_from
    text = _flat(section)
    defaults = KubernetesSpec()
    assert f"namespace `{defaults.web_ingress_from[0].namespace}`" in text
    assert f"default `{defaults.monitoring_namespace}`" in text
    assert f"namespace `{defaults.dns.namespace}`, pods `k8s-app: {defaults.dns.pod_labels['k8s-app']}`" in text


def test_memory_section_documents_the_group_oom_kill_and_the_check() -> None:
    text = _flat(_section("Memory and concurrency", "###"))
    assert "`memory.oom.group`" in text and "**every job in flight**" in text
    assert f"under {MIN_MIB_PER_JOB} MiB per in-flight job after its own ~{WORKER_BASELINE_MIB} MiB" in text
    assert "tests/kubernetes/test_k8s_memory.py" in text and "is not reproduced by the tests" in text


def test_redis_image_default_and_digest_advice() -> None:
    text = _flat(_section("What the Kubernetes target creates"))
    assert f"defaults to `{DEFAULT_REDIS_IMAGE}`" in text and "`IfNotPresent`" in text
    assert f"`redis.image: {DEFAULT_REDIS_IMAGE}@sha256:...`" in text


def test_rotation_command_is_the_one_the_builder_derives() -> None:
    section = _section("Credential rotation", "###")
    [block] = re.findall(r"```sh\n(.*?)```", section, re.S)
    spec = stack_spec("staging").model_copy(
        update={"kubernetes": stack_spec("staging").kubernetes.model_copy(update={"namespace": "emails"})}
    )
    assert block.strip() == rollout_restart(spec, build_manifests(spec))
    assert "killsafe.io/redis-credentials-sha256" in section


def test_redis_data_protection_and_resize_procedure() -> None:
    text = _flat(_section("Redis data", "###"))
    assert "**protected** (`protect`) by default" in text
    assert "`kubernetes.protect_data: false`" in text and "`KubernetesWorkload(..., protect_data=False)`" in text
    for step in ("patch pvc data-<name>-redis-0", "--cascade=orphan", "set `redis.storage_gib: <N>`", "pulumi refresh"):
        assert step in text


def test_requirements_and_older_cluster_fallback() -> None:
    text = _flat(_section("Requirements", "###"))
    assert "Kubernetes **1.30 or later** (`kubernetes.min_version`, default `1.30`)" in text
    assert "with `web.prestop_seconds: 0`" in text


def test_prod_secret_example_keeps_the_url_out_of_history_and_argv() -> None:
    """Issue 7.12: the README's prod example is the command `prerequisites` prints for prod."""
    section = _section("Deploy with Pulumi")
    [block] = re.findall(r"```sh\n(\(umask.*?)\n```", section, re.S)
    [step] = [s for s in prerequisites(stack_spec("prod")) if "create secret generic" in s]
    assert block == step.split(": ", 1)[1]
    assert "--from-literal" not in README


def test_web_metrics_port_and_names_are_documented() -> None:
    text = _section("The worker contract")
    assert f"| web metrics port | {contract.WEB_METRICS_PORT} (`{contract.ENV_WEB_METRICS_PORT}`" in text
    web_metrics = [value for name, value in vars(contract).items() if name.startswith("METRIC_WEB_")]
    for name in (*web_metrics, *contract.WEB_JOB_OUTCOMES):
        assert f"`{name}" in text, name
    monitoring = _flat(_section("What the Kubernetes target creates"))
    assert f"metrics port** ({contract.WEB_METRICS_PORT}, container port `metrics`" in monitoring
