"""Justified checkov suppressions, written into each object so the reason travels with the YAML.

killsafe satisfies every checkov Kubernetes check it can; only three depend on the user's choices:
  CKV_K8S_43 (image digest) when the spec pins a tag rather than a digest (the tag is then pulled
             with imagePullPolicy Always so replicas still agree);
  CKV_K8S_21 (default namespace) when `kubernetes.namespace` is left at `default`;
  CKV2_K8S_6 (pods without a NetworkPolicy) when `kubernetes.network_policies` is false.
Each is suppressed only in exactly that case, with the fix in the reason.
"""

from __future__ import annotations

SKIP_ANNOTATION_PREFIX = "checkov.io/skip"


def has_digest(image: str) -> bool:
    return "@sha256:" in image


def suppressions(namespace: str | None, image: str | None, *, network_policies: bool = True) -> dict[str, str]:
    """`checkov.io/skipN: CHECK=reason` annotations (reasons never contain '=': checkov splits on it).

    `image` is given for objects that run pods (it is what their pods run), and only those can lack
    a NetworkPolicy.
    """
    reasons: list[str] = []
    if image is not None and not has_digest(image):
        reasons.append(
            f"CKV_K8S_43=the spec pins the tag {image.rsplit(':', 1)[-1]} not a digest and it is "
            "pulled with imagePullPolicy Always; pin image@sha256:... in the spec to satisfy this check"
        )
    if namespace == "default":
        reasons.append(
            "CKV_K8S_21=kubernetes.namespace is left at default; set kubernetes.namespace to give the "
            "workload its own namespace with Pod Security restricted enforced"
        )
    if image is not None and not network_policies:
        reasons.append(
            "CKV2_K8S_6=kubernetes.network_policies is false so the cluster's own policies govern this "
            "pod; set kubernetes.network_policies to true to have killsafe restrict its traffic"
        )
    return {f"{SKIP_ANNOTATION_PREFIX}{index}": reason for index, reason in enumerate(reasons, start=1)}
