"""Bad input: each broken stack file gives one precise error (file, config path, value, fix), exit 2,
and `killsafe render` writes nothing. Runs the real `killsafe` entry point."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

KILLSAFE = str(REPO / ".venv" / "bin" / "killsafe")

GOOD = {
    "name": "emails",
    "image": "ghcr.io/acme/emails:1.4.2",
    "redis": {"mode": "in-cluster"},
    "web": {"command": ["killsafe-web"], "port": 8000, "replicas": 2, "memory_mib": 256, "cpu_millicores": 250},
    "worker": {
        "command": ["killsafe-worker"],
        "queues": ["emails"],
        "concurrency_per_queue": 10,
        "replicas": 3,
        "max_job_seconds": 120,
        "memory_mib": 512,
        "cpu_millicores": 500,
    },
}


def _with(path: str, value: object) -> dict[str, object]:
    """GOOD with one key set (value=DELETE removes it); path is dotted inside the workload."""
    workload = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = workload
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return {"killsafe:target": "kubernetes", "killsafe:workload": workload}


DELETE = object()
SRC = "{stacks}/Pulumi.bad.yaml"

CASES = {
    "web port is the metrics port": (
        _with("web.port", 8001),
        "killsafe:workload.web.port: 8001 is the web app's own metrics port (never public); choose another port, "
        "e.g. 8000",
    ),
    "typo key": (
        _with("worker.concurency_per_queue", 10),
        "killsafe:workload.worker.concurency_per_queue: 10 is not a known key; did you mean concurrency_per_queue?",
    ),
    "renamed key": (
        _with("worker.concurrency", 10),
        "killsafe:workload.worker.concurrency: 10 was renamed concurrency_per_queue: it applies to each queue",
    ),
    "negative memory": (
        _with("worker.memory_mib", -512),
        "killsafe:workload.worker.memory_mib: -512 must be >= 32; set a value in range",
    ),
    "zero job budget": (
        _with("worker.max_job_seconds", 0),
        "killsafe:workload.worker.max_job_seconds: 0 must be >= 1; set a value in range",
    ),
    "bad name": (
        _with("name", "Emails_Service"),
        "killsafe:workload.name: Emails_Service is not a DNS-1123 label; use lowercase letters, digits and '-'",
    ),
    "missing image": (
        _with("image", DELETE),
        "killsafe:workload.image: is required; add it, e.g. image: ghcr.io/acme/emails:1.4.2",
    ),
    "unpinned image": (
        _with("image", "ghcr.io/acme/emails"),
        "killsafe:workload.image: ghcr.io/acme/emails pin a tag or digest",
    ),
    "typo in top-level block": (
        _with("wroker", {}),
        "killsafe:workload.wroker: {} is not a known key; did you mean worker?",
    ),
    "no queues": (
        _with("worker.queues", []),
        "killsafe:workload.worker.queues: [] must not be empty",
    ),
    "external redis without secret": (
        _with("redis", {"mode": "external"}),
        "killsafe:workload.redis.url_secret: is required with mode external; add url_secret:",
    ),
    "liveness shorter than a job": (
        _with("worker.liveness_stall_seconds", 60),
        "killsafe:workload.worker.liveness_stall_seconds: 60 must be longer than max_job_seconds (120)",
    ),
    "wrong type": (
        _with("worker.replicas", "three"),
        "killsafe:workload.worker.replicas: three has the wrong type",
    ),
    "redis mode of another target": (
        _with("redis", {"mode": "elasticache"}),
        "killsafe:workload.redis.mode: elasticache is not available on target kubernetes; "
        "use one of in-cluster, external",
    ),
}


def _write_stack(folder: Path, config: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["render", "check"])
def test_broken_config_is_refused_precisely(tmp_path: Path, case: str, command: str) -> None:
    config, expected = CASES[case]
    stacks = tmp_path / "stacks"
    _write_stack(stacks, config)
    out = tmp_path / "out"
    args = [KILLSAFE, command, "--stack", "bad", "--stacks-dir", str(stacks)]
    if command == "render":
        args += ["--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(str(stacks))]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"{stacks}/Pulumi.bad.yaml: {expected}"), errors[0]
    assert not out.exists(), "invalid input must write nothing"


def test_ecs_refuses_a_job_budget_past_fargates_stop_timeout(tmp_path: Path) -> None:
    config = _with("worker.max_job_seconds", 300)
    config["killsafe:target"] = "ecs"
    config["killsafe:workload"]["redis"] = {"mode": "elasticache"}  # type: ignore[index]
    _write_stack(tmp_path, config)
    result = subprocess.run(
        [KILLSAFE, "check", "--stack", "bad", "--stacks-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        f"{tmp_path}/Pulumi.bad.yaml: killsafe:workload.worker.max_job_seconds: 300 plus drain_margin_seconds "
        "(15) = 315 s exceeds ECS Fargate's 120 s stopTimeout; shorten jobs or checkpoint them, or deploy this "
        "worker to Kubernetes"
    ) in result.stderr


def test_unknown_killsafe_key_and_missing_stack(tmp_path: Path) -> None:
    config = _with("name", "emails")
    config["killsafe:targt"] = "kubernetes"
    _write_stack(tmp_path, config)
    result = subprocess.run(
        [KILLSAFE, "check", "--stack", "bad", "--stacks-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Pulumi.bad.yaml: killsafe:targt: is not a known key; did you mean killsafe:target?" in result.stderr
    missing = subprocess.run(
        [KILLSAFE, "check", "--stack", "nope", "--stacks-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "Pulumi.nope.yaml: stack: nope has no stack file" in missing.stderr
    assert "stacks here: bad" in missing.stderr
