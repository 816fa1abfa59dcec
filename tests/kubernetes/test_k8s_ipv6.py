"""Issue 7.11: every Service, probe and NetworkPolicy works on IPv4-only, IPv6-only and dual-stack clusters.

On the built objects: Services ask for both families where the cluster has them (PreferDualStack,
families left to the cluster), probes name no host (the kubelet uses the pod IP of whatever family),
NetworkPolicy peers are selectors (family-free) or the user's own blocks of either family. Then the
servers behind them: the Redis pod's real start script and config answer on ::1 and 127.0.0.1, and
so does each app process on its probe port (the kubelet of an IPv6-only cluster probes an IPv6 address).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from killsafe import contract
from killsafe.kubernetes.build import build_manifests
from killsafe.kubernetes.redis import CONFIG_DIR, DATA_DIR
from tests.conftest import free_port, require
from tests.kubernetes.k8s_specs import all_variant_manifests, container, find, make_spec, pod_templates
from tests.worker.conftest import INHERIT_NOT, WORKER_BIN

MANIFESTS = all_variant_manifests()


@pytest.mark.parametrize("variant", sorted(MANIFESTS))
def test_services_prefer_dual_stack_and_leave_the_families_to_the_cluster(variant: str) -> None:
    services = [m for m in MANIFESTS[variant] if m["kind"] == "Service"]
    assert services
    for service in services:
        spec = service["spec"]
        assert spec["ipFamilyPolicy"] == "PreferDualStack", service["metadata"]["name"]
        assert "ipFamilies" not in spec
        assert spec.get("clusterIP", "None") == "None"  # never an address literal of one family


def _probes(c: dict[str, Any]) -> list[dict[str, Any]]:
    return [c[name] for name in ("startupProbe", "readinessProbe", "livenessProbe") if name in c]


@pytest.mark.parametrize("variant", sorted(MANIFESTS))
def test_probes_use_the_pod_ip_of_either_family(variant: str) -> None:
    for ref, pod in pod_templates(MANIFESTS[variant]):
        for c in pod["containers"]:
            for probe in _probes(c):
                for action in ("httpGet", "tcpSocket"):
                    assert "host" not in probe.get(action, {}), f"{ref}: a probe host pins one family"


@pytest.mark.parametrize("variant", sorted(MANIFESTS))
def test_network_policies_hold_on_either_family(variant: str) -> None:
    """Selectors are family-free; an ipBlock only ever comes from the spec (none in the defaults)."""
    for policy in (m for m in MANIFESTS[variant] if m["kind"] == "NetworkPolicy"):
        rules = policy["spec"].get("ingress", []) + policy["spec"].get("egress", [])
        blocks = [p["ipBlock"] for rule in rules for p in rule.get("from", []) + rule.get("to", []) if "ipBlock" in p]
        if variant not in ("prod", "external-redis"):  # the variants whose spec lists address blocks
            assert blocks == [], policy["metadata"]["name"]
    prod = find(MANIFESTS["prod"], "NetworkPolicy", "emails-worker")["spec"]["egress"][-1]["to"]
    assert [peer["ipBlock"]["cidr"] for peer in prod] == ["0.0.0.0/0", "::/0"]  # both families, as written


def test_redis_listens_on_both_families_with_its_real_start_script(tmp_path: Path) -> None:
    require("redis-server")
    require("redis-cli")
    manifests = build_manifests(make_spec(redis={"memory_mib": 128}))
    conf = find(manifests, "ConfigMap", "emails-redis-config")["data"]["redis.conf"]
    assert "bind * -::*" in conf.splitlines()
    port = free_port()
    paths = {CONFIG_DIR: tmp_path / "config", DATA_DIR: tmp_path / "data", contract.SECRETS_MOUNT_DIR: tmp_path / "s"}
    for path in paths.values():
        path.mkdir()

    def mapped(text: str) -> str:
        for inside, outside in paths.items():
            text = text.replace(inside, str(outside))
        return text.replace(str(contract.REDIS_PORT), str(port))

    (paths[CONFIG_DIR] / "redis.conf").write_text(mapped(conf))
    (paths[contract.SECRETS_MOUNT_DIR] / contract.REDIS_PASSWORD_SECRET_KEY).write_text("pw")
    redis = container(manifests, "StatefulSet", "emails-redis")
    proc = subprocess.Popen([mapped(part) for part in redis["command"]], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        for host in ("::1", "127.0.0.1"):
            _wait_listening(host, port)
            answer = subprocess.run(
                ["redis-cli", "-h", host, "-p", str(port), "ping"],
                env={**os.environ, "REDISCLI_AUTH": "pw"},
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            assert answer.stdout.strip() == "PONG", host
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _wait_listening(host: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on [{host}]:{port}") from None
            time.sleep(0.1)


def _app(tier: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """The tier's process as its built container runs it (args and env), Redis URL pointed nowhere;
    its ports (the web's metrics port too) moved to free ones."""
    built = container(build_manifests(make_spec()), "Deployment", f"emails-{tier}")
    port = free_port()
    moved = {contract.ENV_WEB_METRICS_PORT: str(free_port())} if tier == "web" else {}
    url_file = tmp_path / f"{tier}-redis-url"
    url_file.write_text(f"redis://127.0.0.1:{free_port()}/0")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(INHERIT_NOT)},
        **{e["name"]: e["value"] for e in built["env"]},
        contract.ENV_REDIS_URL_FILE: str(url_file),
        contract.ENV_HEALTH_PORT if tier == "worker" else contract.ENV_WEB_PORT: str(port),
        **moved,
    }
    [command] = built["args"]
    proc = subprocess.Popen([str(WORKER_BIN.with_name(command))], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    return proc, [port, *map(int, moved.values())]


@pytest.mark.parametrize("tier", ["web", "worker"])
def test_app_probe_port_answers_on_ipv6(tier: str, tmp_path: Path) -> None:
    proc, ports = _app(tier, tmp_path)
    try:
        for port in ports:  # the web's metrics port too: Prometheus scrapes the pod IP, IPv6 on an IPv6 cluster
            _wait_listening("127.0.0.1", port, timeout=60)
            _wait_listening("::1", port, timeout=2)
    finally:
        proc.kill()
        proc.wait(timeout=10)
