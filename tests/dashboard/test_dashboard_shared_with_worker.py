"""What the dashboard shares with the worker instead of repeating it: the key prefix's parsing, the audit
record's OS user (public, not a private reach into dlq), and the Redis credential provider, so a rotated
password in REDIS_URL_FILE is picked up by a running dashboard as by the worker and the web app."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from killsafe_worker import config, contract, dlq
from killsafe_worker.config import SettingsError
from killsafe_worker.dashboard import settings
from tests.conftest import REPO, running
from tests.dashboard.conftest import DashboardFactory
from tests.worker.conftest import TEST_PASSWORD, AuthRedisServer, wait_for

DASHBOARD_PACKAGE = REPO / "worker_image" / "src" / "killsafe_worker" / "dashboard"


def test_the_key_prefix_is_parsed_by_the_workers_own_function() -> None:
    assert settings.key_prefix_from_env is config.key_prefix_from_env
    base = {contract.ENV_DASHBOARD_AUTH: "trusted-header", contract.ENV_DASHBOARD_USER_HEADER: "X-Forwarded-User"}
    assert settings.load_dashboard_settings({**base, contract.ENV_KEY_PREFIX: "emails"}).key_prefix == "emails"
    with pytest.raises(SettingsError) as refused:
        settings.load_dashboard_settings({**base, contract.ENV_KEY_PREFIX: "a b"})
    with pytest.raises(SettingsError) as worker_refused:
        config.key_prefix_from_env({contract.ENV_KEY_PREFIX: "a b"})
    assert str(refused.value) == str(worker_refused.value)


def test_the_dashboard_reaches_no_private_name_of_another_module() -> None:
    """ruff's SLF001 (private member access) over the dashboard package: dlq.os_user is public now."""
    assert callable(dlq.os_user) and not hasattr(dlq, "_os_user")
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ruff"), "check", "--select", "SLF001", "--no-cache", str(DASHBOARD_PACKAGE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def auth_redis(tmp_path: Path) -> Iterator[AuthRedisServer]:
    server = AuthRedisServer(tmp_path / "redis")
    for started in running(server):
        assert isinstance(started, AuthRedisServer)
        yield started


def test_a_running_dashboard_picks_up_a_rotated_password_from_the_url_file(
    auth_redis: AuthRedisServer, credentials: Path, tmp_path: Path
) -> None:
    """As the kubelet does when the Redis Secret changes: the file's content is swapped in atomically."""
    url_file = tmp_path / "secret" / "url"
    url_file.parent.mkdir()
    url_file.write_text(auth_redis.url + "\n")
    factory = DashboardFactory("", tmp_path / "dashboard", credentials)
    factory.workdir.mkdir()
    try:
        dashboard = factory.start({contract.ENV_REDIS_URL: "", contract.ENV_REDIS_URL_FILE: str(url_file)})
        wait_for(lambda: dashboard.get(contract.READY_PATH, user=None).status == 200, 20, "readiness")
        assert dashboard.get("/").status == 200

        rotated = f"{TEST_PASSWORD}-rotated"
        auth_redis.cli("CONFIG", "SET", "requirepass", rotated)
        auth_redis.password = rotated
        auth_redis.cli("CLIENT", "KILL", "TYPE", "normal")  # every connection must authenticate again
        wait_for(lambda: dashboard.get(contract.READY_PATH, user=None).status == 503, 20, "an authentication error")

        staged = url_file.with_name("url.new")
        staged.write_text(auth_redis.url + "\n")
        staged.replace(url_file)
        updated = time.monotonic()
        wait_for(lambda: dashboard.get(contract.READY_PATH, user=None).status == 200, 20, "readiness again")
        print(f"dashboard ready {time.monotonic() - updated:.2f} s after the URL file got the new password")
        assert dashboard.get("/").status == 200
        assert dashboard.proc.poll() is None, "no restart"
        assert rotated not in dashboard.log_text() and TEST_PASSWORD not in dashboard.log_text()
    finally:
        factory.cleanup()
