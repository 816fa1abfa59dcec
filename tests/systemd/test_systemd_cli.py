"""`killsafe render|check` on the systemd target: what is written, bad input (exact error, exit 2,
nothing written) and hand-edited folders caught by the checklist."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

KILLSAFE = REPO / ".venv/bin/killsafe"
VM = yaml.safe_load((REPO / "stacks/Pulumi.vm.yaml").read_text())


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KILLSAFE), *args], capture_output=True, text=True, cwd=cwd)


def stack_with(tmp_path: Path, edit: dict[str, Any]) -> Path:
    document = yaml.safe_load(yaml.safe_dump(VM))
    workload = document["config"]["killsafe:workload"]
    for dotted, value in edit.items():
        node = workload
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    stacks = tmp_path / "stacks"
    stacks.mkdir(exist_ok=True)
    (stacks / "Pulumi.bad.yaml").write_text(yaml.safe_dump(document))
    return stacks


def test_render_vm_writes_the_systemd_folder(tmp_path: Path):
    result = run("render", "--stack", "vm", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "systemd"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        ".killsafe-rendered",
        "README.md",
        "alert.sh",
        "env/dashboard.env",
        "env/web.env",
        "env/worker.env",
        "grafana/dashboard.json",
        "install.sh",
        "prometheus/rules.yml",
        "prometheus/scrape-configs.yml",
        "redis/redis.conf",
        "units/emails-alert@.service",
        "units/emails-dashboard.service",
        "units/emails-redis.service",
        "units/emails-web.service",
        "units/emails-worker@.service",
        "units/emails-workers.target",
        "units/emails.target",
    ]
    assert (folder / "install.sh").stat().st_mode & 0o777 == 0o755
    assert "= kill deadline       75 s   TimeoutStopSec" in result.stdout
    assert run("check", "--stack", "vm", "--manifests", str(folder)).returncode == 0


BAD = [
    (
        {"worker.memory_mib": 64},
        "killsafe:workload.worker.memory_mib: 64 is below the 128 MiB the worker needs under systemd's MemoryMax "
        "(idle RSS ~52 MiB, plus its jobs and the CPU sandbox); raise it to at least 128",
    ),
    (
        {"systemd.after": ["postgresql"]},
        "killsafe:workload.systemd.after[0]: postgresql is not a systemd unit name; use name.service, "
        "name@instance.service, name.target ... (letters, digits and :_.-\\ only, see systemd.unit(5))",
    ),
    (
        {"env": {"GREETING": "hello\nExecStartPre=/bin/rm -rf /"}},
        "killsafe:workload.env.GREETING: hello\nExecStartPre=/bin/rm -rf / contains a newline; every systemd "
        "setting is one line, remove it",
    ),
    (
        {"systemd.venv": "/opt/%i/venv"},
        "killsafe:workload.systemd.venv: /opt/%i/venv contains '%', which systemd reads as a specifier (%i, %h, "
        "...); use a path without it",
    ),
    (
        {"worker.command": ["bin/worker"]},
        "killsafe:workload.worker.command[0]: bin/worker is a relative path; use a program name (run from "
        "systemd.venv's bin/) or an absolute path",
    ),
    (
        {"systemd.user": "root"},
        "killsafe:workload.systemd.user: root runs everything as root; use an unprivileged user, or omit user "
        "for a dynamic one",
    ),
    (
        {"web.port": 8082},
        "killsafe:workload.worker.replicas: 3 instances get health ports 8080-8083 (one per instance and one for "
        "the rollout's surge instance, from worker.health_port), which include web.port 8082; move one of them",
    ),
    (
        {"worker.health_port": 8001},
        "killsafe:workload.worker.replicas: 3 instances get health ports 8001-8004 (one per instance and one for "
        "the rollout's surge instance, from worker.health_port), which include the web's metrics port 8001; move "
        "one of them",
    ),
    (
        {"redis": {"mode": "external", "url_secret": {"name": "emails-redis"}}},
        "killsafe:workload.redis.url_secret.name: emails-redis on systemd names the file on each host holding "
        "the Redis URL (a credential), and must be an absolute path (starting with /)",
    ),
    (
        {"systemd.node_exporter_port": 0},
        "killsafe:workload.systemd.node_exporter_port: 0 must be >= 1; set a value in range",
    ),
    (
        {"systemd.node_exporter_port": 8081},
        "killsafe:workload.worker.replicas: 3 instances get health ports 8080-8083 (one per instance and one "
        "for the rollout's surge instance, from worker.health_port), which include systemd.node_exporter_port"
        " 8081; move one of them",
    ),
    (
        {"systemd.node_exporter_port": 8090},
        "killsafe:workload.dashboard.port: 8090 is also systemd.node_exporter_port; the dashboard needs a "
        "port of its own on each host",
    ),
    (
        {"dashboard.auth.credentials_secret.name": "emails-dashboard-users"},
        "killsafe:workload.dashboard.auth.credentials_secret.name: emails-dashboard-users on systemd names "
        "the file on each host with the users (LoadCredential=), e.g. /etc/emails/dashboard-users, and must "
        "be an absolute path (starting with /)",
    ),
    (
        {"dashboard.allowed_from.cidrs": ["10.0.0.0/8"]},
        "killsafe:workload.dashboard.allowed_from.cidrs: [10.0.0.0/8] is for Kubernetes or ECS; on systemd "
        "the dashboard listens on dashboard.bind only (default 127.0.0.1: reach it through an SSH tunnel or a"
        " proxy on the host); remove allowed_from and list the host's addresses in bind, with your firewall "
        "in front",
    ),
    (
        {"dashboard.command": ["bin/dashboard"]},
        "killsafe:workload.dashboard.command[0]: bin/dashboard is a relative path; use a program name (run "
        "from systemd.venv's bin/) or an absolute path",
    ),
    (
        {"dashboard.bind": ["localhost"]},
        "killsafe:workload.dashboard.bind[0]: localhost is not an IP address; write e.g. 127.0.0.1 or ::1",
    ),
    (
        {"redis": {"mode": "in-cluster"}},
        "killsafe:workload.redis.mode: in-cluster is not available on target systemd; use one of local, external",
    ),
]


@pytest.mark.parametrize(("edit", "message"), BAD, ids=[next(iter(e)) for e, _ in BAD])
def test_bad_input_is_an_exact_error_and_writes_nothing(tmp_path: Path, edit: dict[str, Any], message: str):
    stacks = stack_with(tmp_path, edit)
    out = tmp_path / "out"
    result = run("render", "--stacks-dir", str(stacks), "--stack", "bad", "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{stacks / 'Pulumi.bad.yaml'}: {message}" in result.stderr, result.stderr
    assert not out.exists()


HAND_EDITS = [
    (
        "units/emails-worker@.service",
        "TimeoutStopSec=75",
        "TimeoutStopSec=30",
        "KS001 emails-worker@.service: TimeoutStopSec=30 is shorter",
    ),
    ("units/emails-worker@.service", "KillMode=mixed\n", "", "KS001 emails-worker@.service: KillMode=control-group"),
    ("units/emails-worker@.service", "WatchdogSec=30\n", "", "KS002 emails-worker@.service: no WatchdogSec="),
    ("units/emails-web.service", "MemoryMax=256M\n", "", "KS003 emails-web.service: no MemoryMax"),
    ("units/emails-dashboard.service", "CPUQuota=10%\n", "", "KS003 emails-dashboard.service: no CPUQuota"),
    ("units/emails-redis.service", "ProtectSystem=strict\n", "", "KS005 emails-redis.service: ProtectSystem=(unset)"),
    ("units/emails-web.service", "DynamicUser=yes\n", "", "KS005 emails-web.service: runs as root"),
    ("units/emails-dashboard.service", "DynamicUser=yes\n", "", "KS005 emails-dashboard.service: runs as root"),
    (
        "env/worker.env",
        'KILLSAFE_QUEUES="emails"',
        'KILLSAFE_QUEUES="emails"\nREDIS_PASSWORD="hunter2"',
        "KS006 worker.env: sets REDIS_PASSWORD in plain text",
    ),
    (
        "units/emails-dashboard.service",
        "LoadCredential=dashboard-users:/etc/emails/dashboard-users\n",
        'Environment="KILLSAFE_DASHBOARD_CREDENTIALS=alice:operator:$$argon2id$$..."\n',
        "KS006 emails-dashboard.service: sets KILLSAFE_DASHBOARD_CREDENTIALS in plain text",
    ),
    (
        "redis/redis.conf",
        "maxmemory-policy noeviction",
        "maxmemory-policy allkeys-lru",
        "KS007 redis.conf: lacks 'maxmemory-policy noeviction'",
    ),
    (
        "install.sh",
        "systemctl start emails-worker@8083.service\n",
        "",
        "KS008 install.sh: must start the surge instance",
    ),
]


@pytest.mark.parametrize(("path", "old", "new", "finding"), HAND_EDITS, ids=[h[3].split(":")[0] for h in HAND_EDITS])
def test_check_finds_hand_edits(tmp_path: Path, path: str, old: str, new: str, finding: str):
    assert run("render", "--stack", "vm", "--out", str(tmp_path)).returncode == 0
    edited = tmp_path / "systemd" / path
    assert old in edited.read_text()
    edited.write_text(edited.read_text().replace(old, new, 1))
    result = run("check", "--stack", "vm", "--manifests", str(tmp_path / "systemd"))
    assert result.returncode == 1
    assert finding in result.stdout, result.stdout
