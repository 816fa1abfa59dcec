"""Parity: what KubernetesWorkload creates under the mocked engine is exactly what the builder returns.

For every example stack, the Kubernetes objects that reach the engine (apiVersion, kind, metadata,
spec, data, every top-level field, compared type-exactly) equal `build_manifests(spec)`, matched by
(kind, namespace, name) regardless of order; the only extras are, for in-cluster Redis, the generated
credentials Secret, its RandomPassword, and the checksum of that Secret on the pod templates of the
pods that mount it (so a new password rolls them). So `killsafe render` and `pulumi up` deploy the
same thing.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime import rpc

from killsafe import contract
from killsafe.kubernetes import build, credentials, labels
from killsafe.kubernetes.component import KubernetesWorkload
from tests.kubernetes.k8s_specs import variants
from tests.kubernetes.test_component import (
    MOCK_PASSWORD,
    RANDOM_PASSWORD_TYPE,
    canonical,
    k8s_children,
    run_under_mocks,
    stack_spec,
    wire_json,
)

ObjectKey = tuple[str, str, str]


def object_key(manifest: dict[str, Any]) -> ObjectKey:
    metadata = manifest["metadata"]
    return (str(manifest["kind"]), str(metadata.get("namespace", "")), str(metadata["name"]))


PARITY_VARIANTS = ("external-redis", "opt-outs")
"""Variants beyond the stacks: the dashboard with trusted-header auth and allowed_from (external Redis),
and with basic auth under every opt-out."""


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", *PARITY_VARIANTS])
def test_created_objects_are_exactly_the_built_manifests(stack: str) -> None:
    spec = variants()[stack] if stack in PARITY_VARIANTS else stack_spec(stack)
    manifests = build.build_manifests(spec)
    run = run_under_mocks(lambda: KubernetesWorkload(spec.name, spec))
    assert run.error is None

    created = {object_key(r.inputs): r for r in k8s_children(run)}
    assert len(created) == len(k8s_children(run)), "two children created the same object"
    expected = {object_key(m): m for m in manifests}
    assert len(expected) == len(manifests)

    in_cluster = spec.redis.mode == "in-cluster"
    secret_key = ("Secret", spec.kubernetes.namespace, build.redis_secret_name(spec))
    extras = {secret_key} if in_cluster else set()
    assert set(created) == set(expected) | extras

    values = {
        contract.REDIS_PASSWORD_SECRET_KEY: MOCK_PASSWORD,
        contract.REDIS_URL_SECRET_KEY: build.redis_in_cluster_url_template(spec).format(password=MOCK_PASSWORD),
    }
    rolled_by_credentials = set()
    for key, manifest in expected.items():
        inputs = wire_json(created[key].inputs)
        if in_cluster and credentials.reads_redis_secret(spec, manifest):
            annotations = inputs["spec"]["template"]["metadata"]["annotations"]
            assert annotations.pop(credentials.CREDENTIALS_HASH_ANNOTATION) == credentials.credentials_checksum(values)
            rolled_by_credentials.add(key[2])
            if not annotations:
                del inputs["spec"]["template"]["metadata"]["annotations"]
        assert canonical(inputs) == canonical(manifest), key
    if in_cluster:
        readers = {f"{spec.name}-web", f"{spec.name}-worker", f"{spec.name}-redis"}
        if spec.redis.exporter.enabled:
            readers.add(f"{spec.name}-redis-exporter")
        if spec.dashboard.enabled:
            readers.add(f"{spec.name}-dashboard")
        assert rolled_by_credentials == readers

    passwords = run.monitor.of_type(RANDOM_PASSWORD_TYPE)
    if not in_cluster:
        assert passwords == []
        return
    (password,) = passwords
    assert wire_json(password.inputs) == {"length": 32, "special": False}

    secret = created[secret_key].inputs
    assert rpc.is_rpc_secret(secret["stringData"]), "password and URL must be secret outputs"
    assert secret["metadata"] == {
        "name": build.redis_secret_name(spec),
        "namespace": spec.kubernetes.namespace,
        "labels": labels.workload_labels(spec, "redis", spec.redis.image),
    }
    assert {key: value for key, value in secret.items() if key != "stringData"} == {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": secret["metadata"],
    }
    assert rpc.unwrap_rpc_secret(secret["stringData"]) == {
        contract.REDIS_PASSWORD_SECRET_KEY: MOCK_PASSWORD,
        contract.REDIS_URL_SECRET_KEY: build.redis_in_cluster_url_template(spec).format(password=MOCK_PASSWORD),
    }
