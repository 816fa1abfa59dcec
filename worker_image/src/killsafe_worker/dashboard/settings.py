"""The dashboard's settings from the environment, validated before anything listens.

There is no default credential and no open mode: KILLSAFE_DASHBOARD_AUTH must name how people are
authenticated, with what that mode needs, or the process exits 2 with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from killsafe_worker import contract
from killsafe_worker.config import (
    SettingsError,
    env_int,
    key_prefix_from_env,
    log_level_from_env,
    queues_from_env,
    redis_url_file_from_env,
    redis_url_from_env,
)
from killsafe_worker.dlq import never_auto_retry_from_env

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class DashboardSettings:
    redis_url: str
    redis_url_file: str | None
    """Where redis_url came from, if a file: its credentials are read again at every reconnect."""
    queues: tuple[str, ...]
    key_prefix: str
    port: int
    bind: tuple[str, ...] | None
    """None: every address, IPv4 and IPv6."""
    auth_mode: str
    credentials_file: str | None
    credentials_value: str | None
    user_header: str | None
    groups_header: str | None
    operators: frozenset[str]
    trusted_proxies: tuple[IpNetwork, ...]
    retries_per_minute: int
    never_auto_retry: frozenset[str]
    log_level: str


def _csv(environ: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in environ.get(name, "").split(",") if item.strip()]


def _bind(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    addresses = _csv(environ, contract.ENV_DASHBOARD_BIND)
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SettingsError(
                contract.ENV_DASHBOARD_BIND,
                environ[contract.ENV_DASHBOARD_BIND],
                "comma-separated IP addresses, e.g. 127.0.0.1,::1 (unset: every address)",
            ) from None
    return tuple(addresses) or None


def _header(environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not HEADER_NAME.match(raw):
        raise SettingsError(name, raw, "an HTTP header name, e.g. X-Forwarded-User")
    return raw


def _trusted_proxies(environ: Mapping[str, str]) -> tuple[IpNetwork, ...]:
    raw = _csv(environ, contract.ENV_DASHBOARD_TRUSTED_PROXIES) or list(contract.DEFAULT_DASHBOARD_TRUSTED_PROXIES)
    try:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in raw)
    except ValueError:
        raise SettingsError(
            contract.ENV_DASHBOARD_TRUSTED_PROXIES, ",".join(raw), "comma-separated CIDRs, e.g. 10.0.0.0/8,::1/128"
        ) from None


def load_dashboard_settings(environ: Mapping[str, str]) -> DashboardSettings:
    """Every variable the dashboard reads; raises SettingsError on the first bad one."""
    mode = environ.get(contract.ENV_DASHBOARD_AUTH, "").strip()
    if mode not in contract.DASHBOARD_AUTH_MODES:
        raise SettingsError(
            contract.ENV_DASHBOARD_AUTH,
            mode,
            f"basic (with {contract.ENV_DASHBOARD_CREDENTIALS_FILE}) or trusted-header (with "
            f"{contract.ENV_DASHBOARD_USER_HEADER}); the dashboard has no default password and no open mode",
        )
    credentials_file = environ.get(contract.ENV_DASHBOARD_CREDENTIALS_FILE, "").strip() or None
    credentials_value = environ.get(contract.ENV_DASHBOARD_CREDENTIALS, "").strip() or None
    user_header = _header(environ, contract.ENV_DASHBOARD_USER_HEADER)
    groups_header = _header(environ, contract.ENV_DASHBOARD_GROUPS_HEADER)
    operators = frozenset(_csv(environ, contract.ENV_DASHBOARD_OPERATORS))
    if mode == "basic":
        if credentials_file is None and credentials_value is None:
            raise SettingsError(
                contract.ENV_DASHBOARD_CREDENTIALS_FILE,
                "",
                "the path of the credential file (lines name:role:argon2-hash, from `killsafe-dashboard "
                f"hash-password`), or its content in {contract.ENV_DASHBOARD_CREDENTIALS}",
            )
        for name, value in (
            (contract.ENV_DASHBOARD_USER_HEADER, user_header),
            (contract.ENV_DASHBOARD_GROUPS_HEADER, groups_header),
        ):
            if value is not None:
                raise SettingsError(name, value, f"unset: only {contract.ENV_DASHBOARD_AUTH}=trusted-header reads it")
        if operators:
            raise SettingsError(
                contract.ENV_DASHBOARD_OPERATORS,
                ",".join(sorted(operators)),
                "unset: with basic auth each user's role is in the credential file",
            )
    elif user_header is None:
        raise SettingsError(
            contract.ENV_DASHBOARD_USER_HEADER,
            "",
            "the header your auth proxy sets to the authenticated identity, e.g. X-Forwarded-User",
        )
    elif credentials_file is not None or credentials_value is not None:
        raise SettingsError(
            contract.ENV_DASHBOARD_CREDENTIALS_FILE,
            credentials_file or "<value>",
            f"unset: with trusted-header the proxy authenticates; roles come from {contract.ENV_DASHBOARD_OPERATORS}",
        )
    return DashboardSettings(
        redis_url=redis_url_from_env(environ),
        redis_url_file=redis_url_file_from_env(environ),
        queues=tuple(queues_from_env(environ)),
        key_prefix=key_prefix_from_env(environ),
        port=env_int(environ, contract.ENV_DASHBOARD_PORT, contract.DASHBOARD_PORT, minimum=1, maximum=65_535),
        bind=_bind(environ),
        auth_mode=mode,
        credentials_file=credentials_file,
        credentials_value=credentials_value,
        user_header=user_header,
        groups_header=groups_header,
        operators=operators,
        trusted_proxies=_trusted_proxies(environ),
        retries_per_minute=env_int(
            environ,
            contract.ENV_DASHBOARD_RETRIES_PER_MINUTE,
            contract.DEFAULT_DASHBOARD_RETRIES_PER_MINUTE,
            minimum=1,
            maximum=100_000,
        ),
        never_auto_retry=never_auto_retry_from_env(environ),
        log_level=log_level_from_env(environ),
    )
