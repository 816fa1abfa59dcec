"""Where Kubernetes pods find the Redis URL: the credentials Secret mounted as a file.

Only a path to the mounted Secret is ever placed in env (`REDIS_URL_FILE`), never a secret value;
the rest of the environment is target-neutral (`killsafe.app_env`).
"""

from __future__ import annotations

import posixpath

from killsafe import app_env, contract
from killsafe.spec import WorkloadSpec

REDIS_URL_FILE_NAME = contract.REDIS_URL_SECRET_KEY
"""The URL is always mounted under this file name, whatever key holds it in an external Secret."""


def redis_url_file() -> str:
    return posixpath.join(contract.SECRETS_MOUNT_DIR, REDIS_URL_FILE_NAME)


def worker_env(spec: WorkloadSpec) -> dict[str, str]:
    return app_env.worker_env(spec, redis_url_file())


def web_env(spec: WorkloadSpec) -> dict[str, str]:
    return app_env.web_env(spec, redis_url_file())
