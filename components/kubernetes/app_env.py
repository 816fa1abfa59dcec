"""Environment shared by the web and worker containers: Redis URL as a file path, queues, user env.

Only a path to the mounted Secret is ever placed in env (`REDIS_URL_FILE`), never a secret value.
"""

from __future__ import annotations

import posixpath

from killsafe import contract
from killsafe.spec import WorkloadSpec

REDIS_URL_FILE_NAME = contract.REDIS_URL_SECRET_KEY
"""The URL is always mounted under this file name, whatever key holds it in an external Secret."""


def redis_url_file() -> str:
    return posixpath.join(contract.SECRETS_MOUNT_DIR, REDIS_URL_FILE_NAME)


def shared_env(spec: WorkloadSpec) -> dict[str, str]:
    return {
        contract.ENV_REDIS_URL_FILE: redis_url_file(),
        contract.ENV_QUEUES: ",".join(spec.worker.queues),
        contract.ENV_STARTUP_TIMEOUT_SECONDS: str(contract.DEFAULT_STARTUP_TIMEOUT_SECONDS),
    }


def with_user_env(spec: WorkloadSpec, own: dict[str, str]) -> dict[str, str]:
    """killsafe's variables first, then the spec's plain env (sorted; reserved names are rejected
    by the spec, so nothing here is overridden)."""
    return {**own, **{name: spec.env[name] for name in sorted(spec.env)}}
