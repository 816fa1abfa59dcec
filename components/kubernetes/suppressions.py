"""Justified checkov suppressions, written into each object so the reason travels with the YAML.

killsafe satisfies every checkov Kubernetes check it can; only these depend on the user's choices:
  CKV_K8S_43 (image digest) when the spec pins a tag rather than a digest;
  CKV_K8S_15 (imagePullPolicy Always) for an image pinned by tag and pulled IfNotPresent: the
             in-cluster Redis, whose restarts must never depend on the registry (the workload image,
             pinned by tag, is pulled Always instead so replicas agree);
  CKV_K8S_21 (default namespace) when `kubernetes.namespace` is left at `default`;
  CKV2_K8S_6 (pods without a NetworkPolicy) when `kubernetes.network_policies` is false.
Each is suppressed only in exactly that case, with the fix in the reason. A digest (recommended)
removes the first two.
"""

from __future__ import annotations

SKIP_ANNOTATION_PREFIX = "checkov.io/skip"


def has_digest(image: str) -> bool:
    return "@sha256:" in image


def suppressions(
    namespace: str | None,
    image: str | None,
    *,
    pull_policy: str = "Always",
    network_policies: bool = True,
) -> dict[str, str]:
    """`checkov.io/skipN: CHECK=reason` annotations (reasons never contain '=': checkov splits on it).

    `image` (and the `pull_policy` its containers use) is given for objects that run pods, and only
    those can lack a NetworkPolicy.
    """
    reasons: list[str] = []
    if image is not None and not has_digest(image):
        tag = image.rsplit(":", 1)[-1]
        reasons.append(
            f"CKV_K8S_43=the spec pins the tag {tag} not a digest and it is pulled with imagePullPolicy "
            f"{pull_policy}; pin image@sha256:... in the spec to satisfy this check"
        )
        if pull_policy != "Always":
            reasons.append(
                f"CKV_K8S_15=the tag {tag} is a patch release pulled {pull_policy} so a restart never waits "
                "on the registry; pin image@sha256:... in the spec to satisfy this check"
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
