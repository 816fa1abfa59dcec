"""The Redis credentials contract: Secret names and keys, the URL template, and the user's
`prerequisites` command executed by a real bash (with a recording stand-in for kubectl, since no API
server exists here) so its shell quoting and password generation are proven, not read."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

from killsafe import contract
from killsafe.kubernetes.build import (
    prerequisites,
    redis_in_cluster_url_template,
    redis_secret_name,
)
from tests.conftest import require
from tests.kubernetes.k8s_specs import make_spec, stack_spec

RECORDING_KUBECTL = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["KUBECTL_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def test_secret_names_per_mode() -> None:
    assert redis_secret_name(stack_spec("dev")) == "emails-redis-auth"
    assert redis_secret_name(stack_spec("prod")) == "emails-redis-url"


def test_url_template() -> None:
    assert redis_in_cluster_url_template(stack_spec("dev")) == "redis://:{password}@emails-redis.emails-dev.svc:6379/0"


def _run_commands(steps: list[str], tmp_path: Path) -> list[list[str]]:
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
        subprocess.run([bash, "-c", command], env=env, check=True, timeout=30, cwd=tmp_path)
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_in_cluster_prerequisites_create_a_matching_password_and_url(tmp_path: Path) -> None:
    spec = stack_spec("dev")
    steps = prerequisites(spec)
    assert not re.search(r"[0-9a-f]{32}", " ".join(steps)), "no literal password in the instructions"
    calls = _run_commands(steps, tmp_path)
    # the two sides of a pipeline run concurrently: their record order is not defined
    assert sorted(calls[:2]) == [
        ["apply", "-f", "-"],
        ["create", "namespace", "emails-dev", "--dry-run=client", "-o", "yaml"],
    ]
    create = calls[2]
    assert create[:5] == ["-n", "emails-dev", "create", "secret", "generic"]
    assert create[5] == redis_secret_name(spec)
    literals = _literals(create)
    password = literals[contract.REDIS_PASSWORD_SECRET_KEY]
    assert re.fullmatch(r"[0-9a-f]{64}", password)
    assert literals[contract.REDIS_URL_SECRET_KEY] == redis_in_cluster_url_template(spec).format(password=password)
    (tmp_path / "again").mkdir()
    again = _run_commands(steps, tmp_path / "again")
    assert _literals(again[2])[contract.REDIS_PASSWORD_SECRET_KEY] != password  # a fresh password every time


def _literals(call: list[str]) -> dict[str, str]:
    pairs = [arg.removeprefix("--from-literal=").split("=", 1) for arg in call[6:]]
    return {key: value for key, value in pairs}


def test_external_prerequisites_read_the_url_from_a_file(tmp_path: Path) -> None:
    spec = make_spec(
        redis={"mode": "external", "url_secret": {"name": "shared-redis", "key": "connection"}},
        kubernetes={"namespace": "default"},
    )
    steps = prerequisites(spec)
    assert len(steps) == 1  # the default namespace already exists
    [call] = _run_commands(steps, tmp_path)
    assert call == [
        "-n",
        "default",
        "create",
        "secret",
        "generic",
        "shared-redis",
        "--from-file=connection=./redis-url.txt",
    ]
