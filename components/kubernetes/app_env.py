"""Where Kubernetes pods find their credentials: Secrets mounted as files.

Only paths to the mounted Secrets are ever placed in env (`REDIS_URL_FILE`, the dashboard's
`KILLSAFE_DASHBOARD_CREDENTIALS_FILE`), never a secret value; the rest of the environment is
target-neutral (`killsafe.app_env`).
"""

from __future__ import annotations

import posixpath

from killsafe import app_env, contract
from killsafe.spec import WorkloadSpec

REDIS_URL_FILE_NAME = contract.REDIS_URL_SECRET_KEY
"""The URL is always mounted under this file name, whatever key holds it in an external Secret."""


DASHBOARD_CREDENTIALS_FILE_NAME = contract.DASHBOARD_CREDENTIALS_SECRET_KEY
"""The dashboard's credential file is always mounted under this name, whatever key holds it in the Secret."""


def redis_url_file() -> str:
    return posixpath.join(contract.SECRETS_MOUNT_DIR, REDIS_URL_FILE_NAME)


def worker_env(spec: WorkloadSpec) -> dict[str, str]:
    return app_env.worker_env(spec, redis_url_file())


def web_env(spec: WorkloadSpec) -> dict[str, str]:
    return app_env.web_env(spec, redis_url_file(), contract.WEB_METRICS_PORT)


def dashboard_credentials_file() -> str:
    return posixpath.join(contract.DASHBOARD_CREDENTIALS_MOUNT_DIR, DASHBOARD_CREDENTIALS_FILE_NAME)


def dashboard_env(spec: WorkloadSpec) -> dict[str, str]:
    """The dashboard listens on every address of its pod (no KILLSAFE_DASHBOARD_BIND): the NetworkPolicy
    decides who reaches it, and `kubectl port-forward` arrives on the pod's loopback."""
    basic = app_env.dashboard_auth(spec).mode == "basic"
    return app_env.dashboard_env(spec, redis_url_file(), dashboard_credentials_file() if basic else None)
