"""Every rendered unit through systemd's own static checks, and the renderer's values and errors.

`systemd-analyze verify` must print nothing at all (it exits 0 on unknown keys and bad values, only
printing them), and `systemd-analyze security --offline=true` must score web, worker and dashboard <= 2.0. The
app is put where the units expect it by bind-mounting this repository's venv (real killsafe-worker
and killsafe-web) at the install path in a private mount namespace.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from killsafe.config import parse_stack_config
from killsafe.render import write_files
from killsafe.spec import StackConfig
from killsafe.systemd import escape
from killsafe.systemd.build import build_files
from killsafe.systemd.unitfile import parse_unit
from tests.conftest import REPO, require, require_root

MAX_EXPOSURE = 2.0


def vm_stack() -> dict[str, Any]:
    document = yaml.safe_load((REPO / "stacks/Pulumi.vm.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in document.items()}


def variant(**systemd: Any) -> dict[str, Any]:
    raw = vm_stack()
    raw["workload"] = {**raw["workload"], "systemd": {**raw["workload"].get("systemd", {}), **systemd}}
    return raw


def external_worker_only() -> dict[str, Any]:
    raw = vm_stack()
    workload = {k: v for k, v in raw["workload"].items() if k != "web"}
    workload["redis"] = {"mode": "external", "url_secret": {"name": "/etc/emails/redis-url"}}
    return {**raw, "workload": workload}


def dashboard_behind_a_proxy() -> dict[str, Any]:
    """trusted-header auth (no users file, no second credential) on IPv4 and IPv6 loopback."""
    raw = vm_stack()
    auth = {"mode": "trusted-header", "user_header": "X-Forwarded-User", "operators": ["alice"]}
    dashboard = {**raw["workload"]["dashboard"], "auth": auth, "bind": ["127.0.0.1", "::1"]}
    return {**raw, "workload": {**raw["workload"], "dashboard": dashboard}}


STACKS = {
    "vm": vm_stack(),
    "vm-user-webhook": variant(user="emails", alert_webhook_file="/etc/emails/webhook", after=["postgresql.service"]),
    "vm-load-balancer": variant(
        load_balancer={
            "deregister_command": ["/usr/bin/true", "drain 100%", "$HOST"],
            "register_command": ["/usr/bin/true"],
        }
    ),
    "external-worker-only": external_worker_only(),
    "vm-dashboard-proxy": dashboard_behind_a_proxy(),
}


def config(raw: dict[str, Any]) -> StackConfig:
    return parse_stack_config(raw, "stacks/Pulumi.vm.yaml")


@pytest.fixture(scope="module", params=sorted(STACKS))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[StackConfig, Path]:
    stack = config(STACKS[request.param])
    out = tmp_path_factory.mktemp(request.param)
    write_files(build_files(stack.workload, "stacks/Pulumi.vm.yaml"), out)
    return stack, out / "systemd" / "units"


def in_install_layout(stack: StackConfig, units: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a systemd-analyze command with the app at its install path (a private mount namespace)."""
    require_root("the install path is bind-mounted in a private mount namespace")
    require("unshare")
    venv = stack.workload.systemd.venv or f"/opt/{stack.workload.name}/venv"
    top = "/" + venv.strip("/").split("/")[0]
    script = (
        f"mount -t tmpfs tmpfs {top} && mkdir -p {venv} && mount --bind {REPO / '.venv'} {venv} && "
        f'cd {units} && SYSTEMD_UNIT_PATH={units}: exec "$@"'
    )
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *argv], capture_output=True, text=True)


def unit_arguments(units: Path) -> list[str]:
    """Templates are verified as an instance."""
    return sorted(p.name.replace("@.", "@8080.") for p in units.iterdir())


def test_systemd_analyze_verify_prints_nothing(rendered: tuple[StackConfig, Path]):
    stack, units = rendered
    require("systemd-analyze")
    result = in_install_layout(stack, units, "systemd-analyze", "verify", "--man=no", *unit_arguments(units))
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr


def test_security_exposure_of_web_and_worker_is_at_most_2(rendered: tuple[StackConfig, Path], capsys):
    stack, units = rendered
    require("systemd-analyze")
    scores = {}
    for name in unit_arguments(units):
        if not name.endswith(".service"):
            continue
        result = in_install_layout(stack, units, "systemd-analyze", "security", "--offline=true", "--no-pager", name)
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        assert found, result.stdout + result.stderr
        scores[name] = float(found.group(1))
    with capsys.disabled():
        print(f"\n  systemd-analyze security --offline=true: {scores}")
    for name, score in scores.items():
        if "-web." in name or "-worker@" in name or "-dashboard." in name:
            assert score <= MAX_EXPOSURE, f"{name}: exposure {score}"


def test_the_units_carry_the_budget_the_hardening_and_no_secret():
    stack = config(STACKS["vm"])
    files = {f.path.name: f.content for f in build_files(stack.workload, "stacks/Pulumi.vm.yaml")}
    worker = parse_unit(files["emails-worker@.service"])
    service = worker.sections["Service"]
    assert service["TimeoutStopSec"] == ["75"] and service["KillMode"] == ["mixed"]
    assert service["Type"] == ["notify"] and service["WatchdogSec"] == ["30"] and service["NotifyAccess"] == ["main"]
    assert (
        service["MemoryMax"] == ["256M"] and service["MemoryHigh"] == ["230M"] and service["OOMPolicy"] == ["continue"]
    )
    assert service["Environment"] == ["REDIS_URL_FILE=%d/redis-url", "KILLSAFE_HEALTH_PORT=%i", "PYTHONFAULTHANDLER=1"]
    assert service["LoadCredential"] == ["redis-url:/etc/emails/credentials/redis-url"]
    assert worker.sections["Unit"]["OnFailure"] == ["emails-alert@%n.service"]
    assert worker.sections["Unit"]["StartLimitBurst"] == ["5"]
    assert 'KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS="70"' in files["worker.env"]
    assert "KILLSAFE_HEALTH_PORT" not in files["worker.env"]  # per instance, from %i
    target = parse_unit(files["emails-workers.target"])
    assert target.sections["Unit"]["Wants"] == [
        "emails-worker@8080.service emails-worker@8081.service emails-worker@8082.service"
    ]
    assert "requirepass" not in files["redis.conf"] and "maxmemory-policy noeviction" in files["redis.conf"]


def test_values_are_escaped_for_systemd():
    assert escape.specifiers("50%") == "50%%"
    assert escape.exec_command(["/usr/bin/lb", "drain 100%", "$HOST", 'say "hi"', "back\\slash"]) == (
        '/usr/bin/lb "drain 100%%" "$$HOST" "say \\"hi\\"" "back\\\\slash"'
    )
    assert escape.environment_assignment("A", "x%iy") == '"A=x%%iy"'
    assert escape.environment_file_line("A", 'a"b$c`d\\e%f') == 'A="a\\"b\\$c\\`d\\\\e%f"'
    for unsafe in ("a\nb", "a\rb", "a\x00b"):
        with pytest.raises(escape.UnsafeValue):
            escape.specifiers(unsafe)
    with pytest.raises(escape.UnsafeValue):
        escape.exec_command(["relative/path"])


def test_the_load_balancer_is_left_before_sigterm():
    stack = config(STACKS["vm-load-balancer"])
    files = {f.path.name: f.content for f in build_files(stack.workload, "s")}
    service = parse_unit(files["emails-web.service"]).sections["Service"]
    assert service["ExecStop"] == ['/usr/bin/true "drain 100%%" "$$HOST"', "/bin/sleep 5"]
    assert service["ExecStartPost"] == ["/usr/bin/true"]


def test_templates_refuse_a_missing_value():
    import jinja2

    from killsafe.systemd import build

    with pytest.raises(jinja2.UndefinedError):
        build._ENV.get_template("workers.target.j2").render(header="#")


def test_acceptance_render_vm_then_verify_and_security(tmp_path: Path):
    """Issue 10, acceptance 1, as written: `killsafe render --stack vm --out DIR`, then systemd's checks."""
    rendered = subprocess.run(
        [str(REPO / ".venv/bin/killsafe"), "render", "--stack", "vm", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert rendered.returncode == 0, rendered.stderr
    stack, units = config(vm_stack()), tmp_path / "systemd" / "units"
    verify = in_install_layout(stack, units, "systemd-analyze", "verify", "--man=no", *unit_arguments(units))
    assert (verify.returncode, verify.stderr) == (0, "")
    for name in ("emails-web.service", "emails-worker@8080.service"):
        security = in_install_layout(
            stack, units, "systemd-analyze", "security", "--offline=true", "--threshold=20", name
        )
        assert security.returncode == 0, security.stdout  # --threshold is on a 0-100 scale: 20 = exposure 2.0


def test_the_dashboard_unit_is_internal_notify_and_reads_its_users_as_a_credential():
    stack = config(STACKS["vm"])
    files = {f.path.name: f.content for f in build_files(stack.workload, "stacks/Pulumi.vm.yaml")}
    dashboard = parse_unit(files["emails-dashboard.service"])
    service = dashboard.sections["Service"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["LoadCredential"] == [
        "redis-url:/etc/emails/credentials/redis-url",
        "dashboard-users:/etc/emails/dashboard-users",
    ]
    assert service["Environment"] == [
        "REDIS_URL_FILE=%d/redis-url",
        "KILLSAFE_DASHBOARD_CREDENTIALS_FILE=%d/dashboard-users",
    ]
    assert service["MemoryMax"] == ["256M"] and service["KillMode"] == ["mixed"]
    assert dashboard.sections["Unit"]["PartOf"] == ["emails.target"]
    assert "emails-dashboard.service" in parse_unit(files["emails.target"]).sections["Unit"]["Wants"][0].split()
    assert 'KILLSAFE_DASHBOARD_BIND="127.0.0.1"' in files["dashboard.env"]  # loopback, IPv4 only, by default
    assert 'KILLSAFE_DASHBOARD_PORT="8090"' in files["dashboard.env"]
    assert "systemctl restart emails-dashboard.service" in files["install.sh"]
    given = config(variant()).workload.model_copy(
        update={"dashboard": stack.workload.dashboard.model_copy(update={"bind": ["10.0.1.12", "::1"]})}
    )
    env = {f.path.name: f.content for f in build_files(given, "s")}["dashboard.env"]
    assert 'KILLSAFE_DASHBOARD_BIND="10.0.1.12,::1"' in env


def test_a_dashboard_behind_an_auth_proxy_loads_no_users_file():
    stack = config(STACKS["vm-dashboard-proxy"])
    files = {f.path.name: f.content for f in build_files(stack.workload, "s")}
    service = parse_unit(files["emails-dashboard.service"]).sections["Service"]
    assert service["LoadCredential"] == ["redis-url:/etc/emails/credentials/redis-url"]
    assert service["Environment"] == ["REDIS_URL_FILE=%d/redis-url"]
    assert 'KILLSAFE_DASHBOARD_AUTH="trusted-header"' in files["dashboard.env"]
    assert 'KILLSAFE_DASHBOARD_BIND="127.0.0.1,::1"' in files["dashboard.env"]
    assert "dashboard-users" not in files["install.sh"]
