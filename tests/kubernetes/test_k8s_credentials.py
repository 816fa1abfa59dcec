"""The Redis credentials contract: Secret names and keys, the URL template, and the user's
`prerequisites` command executed by a real bash (with a recording stand-in for kubectl, since no API
server exists here) so its shell quoting and password generation are proven, not read.

The stand-in records its arguments and environment and, for every `--from-file`, the file's content
and mode at the moment kubectl reads it: a credential must reach kubectl only through a private file
(issue 7.12: `--from-literal` put the password in kubectl's argv, visible in `ps` and /proc)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

from killsafe import contract
from killsafe.kubernetes.build import (
    prerequisites,
    redis_in_cluster_url_template,
    redis_secret_name,
)
from tests.conftest import require
from tests.kubernetes.k8s_specs import make_spec, stack_spec

RECORDING_KUBECTL = """#!/usr/bin/env python3
import json, os, stat, sys
files = {}
for arg in sys.argv[1:]:
    if arg.startswith("--from-file="):
        key, _, path = arg.removeprefix("--from-file=").partition("=")
        files[key] = {"content": open(path).read(), "mode": stat.S_IMODE(os.stat(path).st_mode), "path": path}
record = {"argv": sys.argv[1:], "env": dict(os.environ), "files": files}
with open(os.environ["KUBECTL_RECORD"], "a") as f:
    f.write(json.dumps(record) + "\\n")
"""


def test_secret_names_per_mode() -> None:
    assert redis_secret_name(stack_spec("dev")) == "emails-redis-auth"
    assert redis_secret_name(stack_spec("prod")) == "emails-redis-url"


def test_url_template() -> None:
    assert redis_in_cluster_url_template(stack_spec("dev")) == "redis://:{password}@emails-redis.emails-dev.svc:6379/0"


def _run_commands(steps: list[str], tmp_path: Path, stdin: str = "") -> list[dict[str, Any]]:
    bash = require("bash")
    require("openssl", "the prerequisites generate the password with openssl rand")
    stub = tmp_path / "bin" / "kubectl"
    stub.parent.mkdir()
    stub.write_text(RECORDING_KUBECTL)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "KUBECTL_RECORD": str(record)}
    for step in steps:
        command = step.split(": ", 1)[1]
        subprocess.run([bash, "-c", command], env=env, check=True, timeout=30, cwd=tmp_path, input=stdin, text=True)
    return [json.loads(line) for line in record.read_text().splitlines()]


def _no_credential_outside_files(call: dict[str, Any], *credentials: str) -> None:
    visible = json.dumps(call["argv"]) + json.dumps(call["env"])
    for credential in credentials:
        assert credential not in visible, "a credential reached kubectl's argv or environment"
    for file in call["files"].values():
        assert file["mode"] & 0o077 == 0, f"{file['path']} is readable by others: {oct(file['mode'])}"
        assert not Path(file["path"]).exists(), "the private file outlived the command"


def test_in_cluster_prerequisites_create_a_matching_password_and_url(tmp_path: Path) -> None:
    spec = stack_spec("dev")
    steps = prerequisites(spec)
    assert not re.search(r"[0-9a-f]{32}", " ".join(steps)), "no literal password in the instructions"
    assert "--from-literal" not in " ".join(steps)
    users = "alice:operator:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n"
    (tmp_path / "dashboard-users").write_text(users)  # dev's dashboard: the users file the user wrote
    calls = _run_commands(steps, tmp_path)
    assert calls[3]["argv"] == [
        "-n",
        "emails-dev",
        "create",
        "secret",
        "generic",
        "emails-dashboard-users",
        "--from-file=credentials=./dashboard-users",
    ]
    assert calls[3]["files"]["credentials"]["content"] == users
    # the two sides of a pipeline run concurrently: their record order is not defined
    assert sorted(c["argv"] for c in calls[:2]) == [
        ["apply", "-f", "-"],
        ["create", "namespace", "emails-dev", "--dry-run=client", "-o", "yaml"],
    ]
    create = calls[2]
    assert create["argv"][:6] == ["-n", "emails-dev", "create", "secret", "generic", redis_secret_name(spec)]
    files = create["files"]
    assert set(files) == {contract.REDIS_PASSWORD_SECRET_KEY, contract.REDIS_URL_SECRET_KEY}
    password = files[contract.REDIS_PASSWORD_SECRET_KEY]["content"]
    assert re.fullmatch(r"[0-9a-f]{64}", password), "64 hex digits, no trailing newline"
    url = files[contract.REDIS_URL_SECRET_KEY]["content"]
    assert url == redis_in_cluster_url_template(spec).format(password=password)
    _no_credential_outside_files(create, password, url)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "dashboard-users").write_text(users)
    again = _run_commands(steps, tmp_path / "again")
    assert again[2]["files"][contract.REDIS_PASSWORD_SECRET_KEY]["content"] != password  # fresh every time


def test_external_prerequisites_read_the_url_at_a_hidden_prompt(tmp_path: Path) -> None:
    spec = make_spec(
        redis={"mode": "external", "url_secret": {"name": "shared-redis", "key": "connection"}},
        kubernetes={"namespace": "default"},
    )
    steps = prerequisites(spec)
    assert len(steps) == 1  # the default namespace already exists
    url = "rediss://default:s3cr3t-Pa55@redis.example.com:6380/0"
    [call] = _run_commands(steps, tmp_path, stdin=url + "\n")
    assert call["argv"][:6] == ["-n", "default", "create", "secret", "generic", "shared-redis"]
    assert [arg.split("=")[0:2] for arg in call["argv"][6:]] == [["--from-file", "connection"]]
    assert call["files"]["connection"]["content"] == url
    _no_credential_outside_files(call, url, "s3cr3t-Pa55")
