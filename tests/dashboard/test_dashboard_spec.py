"""The `dashboard:` spec block: off by default, no way to enable it without authentication, errors that
name the field, and an environment (`app_env.dashboard_env`) that the dashboard itself accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from killsafe import contract
from killsafe.app_env import dashboard_env
from killsafe.config import ConfigError, parse_stack_config
from killsafe.spec import WorkloadSpec
from killsafe_worker.dashboard.auth import BasicAuthenticator, TrustedHeaderAuthenticator, authenticator_for
from killsafe_worker.dashboard.settings import load_dashboard_settings
from tests.dashboard.conftest import write_credentials

WORKLOAD: dict[str, Any] = {
    "name": "emails",
    "image": "ghcr.io/acme/emails:1.4.2",
    "worker": {"queues": ["emails", "reports"], "max_job_seconds": 60},
}
BASIC = {"mode": "basic", "credentials_secret": {"name": "emails-dashboard-users"}}
PROXY = {
    "mode": "trusted-header",
    "user_header": "X-Forwarded-User",
    "groups_header": "X-Forwarded-Groups",
    "operators": ["group:sre", "dave@example.invalid"],
}


def spec(dashboard: dict[str, Any] | None = None) -> WorkloadSpec:
    return WorkloadSpec.model_validate({**WORKLOAD, **({"dashboard": dashboard} if dashboard is not None else {})})


def error(dashboard: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_stack_config({"workload": {**WORKLOAD, "dashboard": dashboard}}, "stacks/Pulumi.x.yaml")
    assert len(refused.value.issues) == 1
    return str(refused.value)


def test_the_dashboard_is_off_by_default() -> None:
    dashboard = spec().dashboard
    assert dashboard.enabled is False and dashboard.auth is None
    assert dashboard.port == contract.DASHBOARD_PORT and dashboard.command == [contract.DASHBOARD_COMMAND]
    assert dashboard.allowed_from.cidrs == [] and dashboard.allowed_from.kubernetes_namespaces == []
    with pytest.raises(ValueError, match="has no dashboard"):
        dashboard_env(spec(), None, None)


@pytest.mark.parametrize(
    ("dashboard", "expected"),
    [
        ({"enabled": True}, "killsafe:workload.dashboard.auth: is required when the dashboard is enabled"),
        (
            {"enabled": True, "auth": {"mode": "basic"}},
            "killsafe:workload.dashboard.auth.credentials_secret: is required with mode basic (there is no default",
        ),
        (
            {"enabled": True, "auth": {"mode": "trusted-header"}},
            "killsafe:workload.dashboard.auth.user_header: is required with mode trusted-header",
        ),
        (
            {"enabled": True, "auth": {**BASIC, "operators": ["alice"]}},
            "killsafe:workload.dashboard.auth.operators: [alice] is only used with mode trusted-header",
        ),
        (
            {"enabled": True, "auth": {**PROXY, "credentials_secret": {"name": "x"}}},
            "killsafe:workload.dashboard.auth.credentials_secret: {key: credentials, name: x} is only used",
        ),
        ({"enabled": True, "auth": {**PROXY, "trusted_proxies": ["everyone"]}}, "is not a CIDR"),
        ({"enabled": True, "auth": BASIC, "bind": ["localhost"]}, "is not an IP address"),
        (
            {"enabled": True, "auth": BASIC, "memory_mib": 64},
            "killsafe:workload.dashboard.memory_mib: 64 must be >= 192",
        ),
        (
            {"enabled": True, "auth": BASIC, "never_auto_retry": ["charge,refund"]},
            "killsafe:workload.dashboard.never_auto_retry[0]: charge,refund does not match",
        ),
        ({"enabled": True, "auth": BASIC, "passwd": "x"}, "killsafe:workload.dashboard.passwd"),
        ({"enabled": True, "auth": {**BASIC, "password": "hunter2"}}, "dashboard.auth.password"),
        ({"enabled": True, "auth": BASIC, "port": 80}, "killsafe:workload.dashboard.port"),
    ],
)
def test_each_mistake_names_its_field(dashboard: dict[str, Any], expected: str) -> None:
    message = error(dashboard)
    assert message.startswith("stacks/Pulumi.x.yaml: ") and expected in message, message


def test_basic_auth_env_is_what_the_dashboard_reads(tmp_path: Path) -> None:
    workload = spec({"enabled": True, "auth": BASIC, "never_auto_retry": ["charge", "refund"], "retries_per_minute": 7})
    users = write_credentials(tmp_path / contract.DASHBOARD_CREDENTIALS_SECRET_KEY)

    env = dashboard_env(workload, f"{contract.SECRETS_MOUNT_DIR}/url", str(users))

    assert env == {
        contract.ENV_REDIS_URL_FILE: f"{contract.SECRETS_MOUNT_DIR}/url",
        contract.ENV_QUEUES: "emails,reports",
        contract.ENV_KEY_PREFIX: "bull",
        contract.ENV_STARTUP_TIMEOUT_SECONDS: str(contract.DEFAULT_STARTUP_TIMEOUT_SECONDS),
        contract.ENV_DASHBOARD_PORT: str(contract.DASHBOARD_PORT),
        contract.ENV_DASHBOARD_AUTH: "basic",
        contract.ENV_DASHBOARD_RETRIES_PER_MINUTE: "7",
        contract.ENV_NEVER_AUTO_RETRY: "charge,refund",
        contract.ENV_DASHBOARD_CREDENTIALS_FILE: str(users),
    }
    (tmp_path / "url").write_text("redis://127.0.0.1:6379/0\n")
    settings = load_dashboard_settings({**env, contract.ENV_REDIS_URL_FILE: str(tmp_path / "url")})
    assert (settings.queues, settings.port, settings.retries_per_minute) == (("emails", "reports"), 8090, 7)
    assert settings.never_auto_retry == frozenset({"charge", "refund"}) and settings.bind is None
    on_a_vm = dashboard_env(workload, None, str(users), default_bind=contract.DEFAULT_DASHBOARD_VM_BIND)
    assert on_a_vm[contract.ENV_DASHBOARD_BIND] == "127.0.0.1"  # no ::1: hosts without IPv6 could not bind it
    assert load_dashboard_settings(on_a_vm).bind == ("127.0.0.1",)
    assert isinstance(authenticator_for(settings), BasicAuthenticator)
    # ECS injects the file's content as a secret env value: nothing about it in the plain env.
    injected = dashboard_env(workload, None, None)
    assert contract.ENV_DASHBOARD_CREDENTIALS_FILE not in injected
    assert contract.ENV_DASHBOARD_CREDENTIALS not in injected


def test_trusted_header_env_is_what_the_dashboard_reads() -> None:
    workload = spec({"enabled": True, "auth": PROXY, "bind": ["127.0.0.1", "::1"]})

    env = dashboard_env(workload, None, None)

    assert env[contract.ENV_DASHBOARD_AUTH] == "trusted-header"
    assert env[contract.ENV_DASHBOARD_USER_HEADER] == "X-Forwarded-User"
    assert env[contract.ENV_DASHBOARD_GROUPS_HEADER] == "X-Forwarded-Groups"
    assert env[contract.ENV_DASHBOARD_OPERATORS] == "group:sre,dave@example.invalid"
    assert env[contract.ENV_DASHBOARD_TRUSTED_PROXIES] == "127.0.0.1/32,::1/128"
    assert env[contract.ENV_DASHBOARD_BIND] == "127.0.0.1,::1"
    settings = load_dashboard_settings({**env, contract.ENV_REDIS_URL: "redis://127.0.0.1:6379/0"})
    assert settings.operators == frozenset({"group:sre", "dave@example.invalid"})
    assert settings.bind == ("127.0.0.1", "::1")
    assert isinstance(authenticator_for(settings), TrustedHeaderAuthenticator)


def test_the_readme_example_is_a_valid_dashboard_block() -> None:
    import re
    import textwrap

    import yaml

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## The job dashboard\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```yaml\n(.*?)```", section, re.S)[0]  # the next one: tests/kubernetes/test_k8s_dashboard.py
    workload = spec(yaml.safe_load(textwrap.dedent(block))["dashboard"])
    assert workload.dashboard.enabled and workload.dashboard.never_auto_retry == ["charge"]
    assert workload.dashboard.allowed_from.kubernetes_namespaces == ["oauth2-proxy"]
