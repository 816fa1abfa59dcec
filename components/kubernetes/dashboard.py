"""The job dashboard on Kubernetes (`dashboard.enabled`): its Deployment and its own ClusterIP Service.

Its NetworkPolicy lives with the others (`network.py`, `dashboard_policy`). What keeps it internal:

- its own pods (component `dashboard`), port and Service: the web Service selects component `web`
  only, so no request to the public web port reaches the dashboard (checklist rule KS004 says so
  for hand-edited files too);
- a ClusterIP Service, never NodePort or LoadBalancer; the NetworkPolicy admits the dashboard port
  only from `dashboard.allowed_from`, and with nothing listed from nobody: `kubectl port-forward`
  arrives through the pod's own loopback, which no NetworkPolicy governs.

One replica, replaced with `Recreate`: the CSRF key and the retry budget live in the process, so two
processes (a rolling update's surge) would serve pages whose forms the other refuses, and would each
spend a full `retries_per_minute`. Recreate keeps it to one process at any moment, at the price of a
few seconds without a dashboard per deploy (the workers are not affected; `killsafe-worker dlq` works
throughout). No PodDisruptionBudget: for one replica a budget either blocks every node drain
(minAvailable 1) or allows the eviction anyway (maxUnavailable 1); an evicted dashboard holds no job
state (retries and the audit trail are in Redis) and is rescheduled in seconds.

Credentials: the Redis Secret and, with basic auth, the dashboard's credential Secret are mounted as
read-only files. The kubelet updates both in place when the Secrets change, and the dashboard re-reads
both (the users file when it changes, the Redis URL at every reconnect), so a new password or a new
user needs no restart. The component's Redis checksum annotation rolls the dashboard with the other
pods that read the generated Redis Secret; the dashboard's credential Secret is the user's, and
killsafe never sees its content.
"""

from __future__ import annotations

import shlex
from typing import Any

from killsafe import contract
from killsafe.app_env import dashboard_auth
from killsafe.kubernetes import pods
from killsafe.kubernetes.app_env import DASHBOARD_CREDENTIALS_FILE_NAME, dashboard_env
from killsafe.kubernetes.app_pods import app_container, app_deployment, app_service
from killsafe.kubernetes.probes import ProbeSet, probe_set
from killsafe.spec import DashboardCredentialsRef, WorkloadSpec

PORT_NAME = "dashboard"
CREDENTIALS_VOLUME = "dashboard-credentials"
GRACE_SECONDS = 10
"""The dashboard stops in about 2 s (aiohttp's shutdown timeout for in-flight requests); the rest is slack."""
STARTUP_CPU_SECONDS = 8.0
"""CPU time the dashboard may use to start listening: 1.3-1.9 s measured here (imports, templates and
one Argon2 hash, 59 MiB RSS), times four like the worker's; 80 s of startup window at the default 100m."""
STRATEGY: dict[str, Any] = {"type": "Recreate"}
USERS_FILE = "./dashboard-users"
"""Where the printed command reads the users from: a file, never a literal on a command line."""
"""At most one dashboard process at any moment (see the module docstring)."""


def dashboard_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-dashboard"


def dashboard_probes(spec: WorkloadSpec) -> ProbeSet:
    """/readyz (Redis answers) and /livez (the process answers), the timings derived in probes.py."""
    return probe_set(spec.dashboard.port, spec.dashboard.cpu_millicores, startup_cpu_seconds=STARTUP_CPU_SECONDS)


def credentials_secret(spec: WorkloadSpec) -> DashboardCredentialsRef | None:
    """The user's Secret with the credential file (basic auth), None with trusted-header."""
    return dashboard_auth(spec).credentials_secret


def dashboard_deployment(spec: WorkloadSpec, service_account: str) -> dict[str, Any]:
    dashboard = spec.dashboard
    probes = dashboard_probes(spec)
    secret = credentials_secret(spec)
    mounts, volumes = [], []
    if secret is not None:
        mounts.append(pods.secret_mount(CREDENTIALS_VOLUME, contract.DASHBOARD_CREDENTIALS_MOUNT_DIR))
        volumes.append(pods.secret_volume(secret.name, secret.key, DASHBOARD_CREDENTIALS_FILE_NAME, CREDENTIALS_VOLUME))
    container = app_container(
        spec,
        "dashboard",
        command=dashboard.command,
        entrypoint=None,
        env=dashboard_env(spec),
        port_name=PORT_NAME,
        probes=probes,
        memory_mib=dashboard.memory_mib,
        cpu_millicores=dashboard.cpu_millicores,
        extra_mounts=mounts,
    )
    return app_deployment(
        spec,
        "dashboard",
        name=dashboard_name(spec),
        container=container,
        replicas=1,
        grace_seconds=GRACE_SECONDS,
        min_ready_seconds=probes.min_ready_seconds,
        service_account=service_account,
        extra_volumes=volumes,
        strategy=STRATEGY,
    )


def dashboard_service(spec: WorkloadSpec) -> dict[str, Any]:
    """ClusterIP on `dashboard.port`, selecting the dashboard pods only."""
    return app_service(spec, "dashboard", name=dashboard_name(spec), port_name=PORT_NAME, port=spec.dashboard.port)


def dashboard_prerequisites(spec: WorkloadSpec) -> list[str]:
    """The credential Secret basic auth needs, created from a file (never a literal on a command line)."""
    if not spec.dashboard.enabled:
        return []
    secret = credentials_secret(spec)
    if secret is None:
        return []
    namespace, name, key = (shlex.quote(v) for v in (spec.kubernetes.namespace, secret.name, secret.key))
    return [
        f"Create the dashboard's users Secret {name} (key {key}) from {USERS_FILE}, a file with one "
        f"`name:role:hash` line per person, each printed by `{contract.DASHBOARD_COMMAND} hash-password --user NAME "
        "--role viewer|operator` (it reads the password from stdin; to change users later, pipe the same command "
        "with --dry-run=client -o yaml into kubectl apply -f -, and the dashboard re-reads the file without a "
        f"restart): kubectl -n {namespace} create secret generic {name} --from-file={key}={USERS_FILE}"
    ]
