"""Security invariants, asserted for every pod of every example stack and variant.

A loop over all pods rather than one test per field: a new pod kind added later is covered without
anyone remembering to write its tests.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.kubernetes.k8s_specs import all_variant_manifests, pod_templates

MANIFESTS = all_variant_manifests()
PODS = [(variant, ref, pod) for variant, manifests in MANIFESTS.items() for ref, pod in pod_templates(manifests)]
# Anything that looks like a credential value: a password literal, a URL with userinfo, a long hex/base64 run.
SECRETISH = re.compile(
    r'redis(s)?://[^\s/]*:[^\s@]+@|requirepass\s+[^\s\\"$]|[A-Fa-f0-9]{32,}|[A-Za-z0-9+/]{40,}={0,2}'
)


def test_every_variant_has_pods() -> None:
    assert len(PODS) >= 14


@pytest.mark.parametrize(("variant", "ref", "pod"), PODS, ids=[f"{v}:{r}" for v, r, _ in PODS])
def test_pod_is_restricted(variant: str, ref: str, pod: dict[str, Any]) -> None:
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] >= 10000 and context["runAsGroup"] >= 10000
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] != "default"
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    for volume in pod.get("volumes", []):
        assert "hostPath" not in volume
    containers = pod["containers"] + pod.get("initContainers", [])
    assert containers
    for c in containers:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for section in ("requests", "limits"):
            assert set(c["resources"][section]) == {"cpu", "memory"}
        assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
        if c in pod["containers"]:  # init containers run to completion: Kubernetes refuses probes on them
            assert {"readinessProbe", "livenessProbe"} <= set(c)
        assert "envFrom" not in c
        for env in c.get("env", []):
            assert "valueFrom" not in env, f"{ref}: {env['name']} reads a secret into the environment"
            assert not SECRETISH.search(env["value"]), f"{ref}: {env['name']} looks like a secret"
        for arg in c.get("command", []) + c.get("args", []):
            assert not SECRETISH.search(arg), f"{ref}: a process argument looks like a secret"
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for m in mounts.values():
            if m["name"] in secret_volumes:
                assert m.get("readOnly") is True


def test_no_object_carries_a_secret_or_a_secret_value() -> None:
    for variant, manifests in MANIFESTS.items():
        assert not [m for m in manifests if m["kind"] == "Secret"], variant
        # Known hashes are not secrets: image digests and the redis.conf checksum annotation.
        text = re.sub(r'sha256[:-][0-9a-f]+|"killsafe.io/redis-conf-sha256": "[0-9a-f]{64}"', "", json.dumps(manifests))
        assert not SECRETISH.search(text), f"{variant}: {SECRETISH.search(text)}"
