"""`killsafe render` / `check` for the ECS stack through the real entry point: acceptance 1, 2 and 4."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from killsafe.config import load_stack
from killsafe.ecs.build import wire_requests
from killsafe.render import MARKER
from tests.conftest import REPO
from tests.ecs.botocore_models import model_problems

KILLSAFE = str(REPO / ".venv" / "bin" / "killsafe")
STACKS = REPO / "stacks"


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KILLSAFE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("render")
    result = run("render", "--stack", "ecs", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out / "ecs", result


def _files(folder: Path, operation: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"*.{operation}.json"))]


def test_render_writes_botocore_request_files_with_the_budget_and_a_health_check(
    rendered: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Acceptance 1, with the alarm, topic and scaling files present and valid too."""
    folder, result = rendered
    files = sorted(folder.glob("*.json"))
    assert len(files) == len(wire_requests(load_stack("ecs", STACKS).workload))
    assert (folder / MARKER).read_text().splitlines() == [f.name for f in files]
    for path in files:
        service, operation = path.name.removesuffix(".json").split(".")[-2:]
        assert model_problems(service, operation, json.loads(path.read_text())) == [], path.name
    tasks = {t["family"]: t for t in _files(folder, "RegisterTaskDefinition")}
    assert set(tasks) == {"emails-web", "emails-worker", "emails-dashboard"}
    (worker,) = tasks["emails-worker"]["containerDefinitions"]
    assert worker["stopTimeout"] == 90 + 15
    assert worker["healthCheck"]["command"][:3] == ["CMD", "killsafe-worker", "healthcheck"]
    services = {s["serviceName"] for s in _files(folder, "CreateService")}
    assert services == {"emails-web", "emails-worker", "emails-dashboard"}
    alarms = {a["AlarmName"] for a in _files(folder, "PutMetricAlarm")}
    assert {"emails-WorkerDown", "emails-QueueStalled-emails", "emails-FailedJobsHigh-emails-bulk"} <= alarms
    assert {"emails-DeadLetterGrowing-emails", "emails-JobsInterrupted-emails-shutdown_deadline"} <= alarms
    assert {"emails-RedisMemoryHigh", "emails-RedisEvictionPolicyUnsafe"} <= alarms
    assert len(_files(folder, "CreateTopic")) == 1
    assert len(_files(folder, "RegisterScalableTarget")) == len(_files(folder, "PutScalingPolicy")) == 1
    assert f"wrote {len(files)} files to {folder}/" in result.stdout
    assert "= kill deadline      105 s   stopTimeout" in result.stdout
    assert "${redis-auth-token.result}" in result.stdout, "the plan says how to fill in the generated token"


def test_rendered_files_equal_the_builder_requests(rendered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, _ = rendered
    expected = wire_requests(load_stack("ecs", STACKS).workload)
    got = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert got == [r.params for r in expected]
    names = [p.name for p in sorted(folder.glob("*.json"))]
    assert names == [f"{i:02d}-{r.key}.{r.service}.{r.operation}.json" for i, r in enumerate(expected)]


def _broken_stack(tmp_path: Path, change: Any) -> Path:
    document = yaml.safe_load((STACKS / "Pulumi.ecs.yaml").read_text())
    change(document["config"]["killsafe:workload"])
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.ecs.yaml").write_text(yaml.safe_dump(document))
    return stacks


BAD_INPUT = {
    "a job budget past Fargate's 120 s stopTimeout": (
        lambda w: w["worker"].update(max_job_seconds=300),
        "killsafe:workload.worker.max_job_seconds: 300 plus drain_margin_seconds (15) = 315 s exceeds ECS Fargate's "
        "120 s stopTimeout; shorten jobs or checkpoint them, or deploy this worker to Kubernetes",
    ),
    "an empty subnet list": (
        lambda w: w["ecs"].update(subnets=[]),
        "killsafe:workload.ecs.subnets: [] lists no subnet; list the private subnets the tasks run in (two in "
        "different Availability Zones), e.g. subnets: [subnet-0123456789abcdef0, subnet-0fedcba9876543210]",
    ),
    "memory that fits no Fargate size": (
        lambda w: w["worker"].update(memory_mib=200_000),
        "killsafe:workload.worker.memory_mib: 200000 fits no Fargate task size: needs 200000 MiB; the largest "
        "Fargate task has 16 vCPU / 120 GiB; lower memory_mib or deploy to Kubernetes",
    ),
    "more CPU than Fargate has": (
        lambda w: w["web"].update(cpu_millicores=20_000),
        "killsafe:workload.web.cpu_millicores: 20000 fits no Fargate task size: needs 20480 CPU units; the largest "
        "Fargate task has 16 vCPU / 120 GiB; lower cpu_millicores or deploy to Kubernetes",
    ),
    "no region": (
        lambda w: w["ecs"].pop("region"),
        "killsafe:workload.ecs.region: is required with target ecs; add it, e.g. region: eu-west-1",
    ),
    "a retention CloudWatch does not offer": (
        lambda w: w["ecs"].update(log_retention_days=45),
        "killsafe:workload.ecs.log_retention_days: 45 is not a retention CloudWatch Logs accepts; use 30 or another "
        "of 1, 3, 5, 7, 14, 30, 60",
    ),
    "Multi-AZ on one subnet": (
        lambda w: w["ecs"].update(subnets=["subnet-0a1b2c3d4e5f60718"]),
        "killsafe:workload.ecs.subnets: [subnet-0a1b2c3d4e5f60718] is one subnet, but elasticache.replicas 1 means "
        "Multi-AZ, which needs subnets in two Availability Zones; list a second subnet or set elasticache.replicas: 0",
    ),
    "an external secret that is not an ARN": (
        lambda w: w.update(redis={"mode": "external", "url_secret": {"name": "emails-redis"}}),
        "killsafe:workload.redis.url_secret.name: emails-redis is not a Secrets Manager secret ARN; on target ecs",
    ),
    "in-cluster redis on ECS": (
        lambda w: w.update(redis={"mode": "in-cluster"}),
        "killsafe:workload.redis.mode: in-cluster is not available on target ecs; use one of elasticache, external",
    ),
    "a load balancer without a web tier": (
        lambda w: w.pop("web"),
        "killsafe:workload.ecs.load_balancer: ",
    ),
    "a malformed subnet id": (
        lambda w: w["ecs"].update(subnets=["subnet-a", "subnet-0f1e2d3c4b5a69788"]),
        "killsafe:workload.ecs.subnets[0]: subnet-a does not match",
    ),
    "scale to zero on ECS": (
        lambda w: w["worker"]["autoscaling"].update(min_replicas=0),
        "killsafe:workload.worker.autoscaling.min_replicas: 0 cannot be 0 on target ecs: the backlog the autoscaler "
        "reads is published by the workers themselves (CloudWatch EMF), so with no task running nothing publishes it",
    ),
    "a dashboard bind address on ECS": (
        lambda w: w["dashboard"].update(bind=["127.0.0.1"]),
        "killsafe:workload.dashboard.bind: [127.0.0.1] is for systemd; on target ecs the dashboard listens on its "
        "task's own address",
    ),
    "Kubernetes namespaces for the ECS dashboard": (
        lambda w: w["dashboard"]["allowed_from"].update(kubernetes_namespaces=["oauth2-proxy"]),
        "killsafe:workload.dashboard.allowed_from.kubernetes_namespaces: [oauth2-proxy] are Kubernetes namespaces; "
        "on target ecs list allowed_from.cidrs or allowed_from.security_group_ids",
    ),
    "a dashboard open to the internet": (
        lambda w: w["dashboard"]["allowed_from"].update(cidrs=["10.20.0.0/16", "::/0"]),
        "killsafe:workload.dashboard.allowed_from.cidrs[1]: ::/0 admits every address; the dashboard shows job data "
        "and can retry jobs",
    ),
    "dashboard credentials that are not an ARN": (
        lambda w: w["dashboard"]["auth"].update(credentials_secret={"name": "emails-dashboard-users"}),
        "killsafe:workload.dashboard.auth.credentials_secret.name: emails-dashboard-users is not a Secrets Manager "
        "secret ARN; on target ecs",
    ),
    "a trusted header believed from loopback on ECS": (
        lambda w: w["dashboard"].update(auth={"mode": "trusted-header", "user_header": "X-Forwarded-User"}),
        "killsafe:workload.dashboard.auth.trusted_proxies: [127.0.0.1/32, '::1/128'] is loopback only, but on target "
        "ecs no proxy runs inside the dashboard's task",
    ),
    "a web grace past 120 s": (
        lambda w: w["web"].update(max_request_seconds=200),
        "killsafe:workload.web.max_request_seconds: 200 plus prestop_seconds (5) and a 5 s reserve = 210 s exceeds "
        "ECS Fargate's 120 s stopTimeout; shorten requests",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused_with_the_exact_error_and_nothing_written(tmp_path: Path, case: str) -> None:
    change, message = BAD_INPUT[case]
    stacks = _broken_stack(tmp_path, change)
    out = tmp_path / "out"
    result = run("render", "--stack", "ecs", "--out", str(out), "--stacks-dir", str(stacks))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: invalid configuration, nothing was written\n")
    assert f"{stacks}/Pulumi.ecs.yaml: {message}" in result.stderr
    assert not out.exists()


def test_check_refuses_the_budget_past_fargates_cap_too(tmp_path: Path) -> None:
    stacks = _broken_stack(tmp_path, lambda w: w["worker"].update(max_job_seconds=300))
    result = run("check", "--stack", "ecs", "--stacks-dir", str(stacks))
    assert result.returncode == 2
    assert "killsafe:workload.worker.max_job_seconds: 300 plus drain_margin_seconds (15) = 315 s" in result.stderr


def test_check_is_clean_and_covers_the_ecs_objects() -> None:
    """Acceptance 4."""
    result = run("check", "--stack", "ecs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "killsafe check: stack ecs is clean (75 objects, 8 rules" in result.stdout


def test_check_finds_hand_edits_in_rendered_files(rendered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, _ = rendered
    assert run("check", "--stack", "ecs", "--manifests", str(folder)).returncode == 0
    edited = folder.parent / "edited"
    edited.mkdir()
    for path in folder.glob("*.json"):
        params = json.loads(path.read_text())
        if path.name.endswith("worker-task-definition.ecs.RegisterTaskDefinition.json"):
            (container,) = params["containerDefinitions"]
            container["stopTimeout"] = 30
            del container["healthCheck"]
            del container["memory"]
            container["environment"].append({"name": "REDIS_URL", "value": "rediss://:hunter2@redis:6379/0"})
        if path.name.endswith("worker-service.ecs.CreateService.json"):
            params["deploymentConfiguration"]["minimumHealthyPercent"] = 50
        (edited / path.name).write_text(json.dumps(params))
    result = run("check", "--stack", "ecs", "--manifests", str(edited))
    assert result.returncode == 1
    out = result.stdout
    assert (
        "KS001 RegisterTaskDefinition/worker-task-definition: stopTimeout 30 is shorter than max_job_seconds (90) + "
        "drain_margin_seconds (15) = 105" in out
    )
    assert "KS002 RegisterTaskDefinition/worker-task-definition: container worker has no healthCheck" in out
    assert "KS003 RegisterTaskDefinition/worker-task-definition: container worker sets no memory" in out
    assert "KS006 RegisterTaskDefinition/worker-task-definition: container worker sets REDIS_URL in environment" in out
    assert "KS008 CreateService/worker-service: a deploy may stop workers before new ones are healthy" in out


def test_a_rerender_replaces_its_own_json_files(rendered: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, _ = rendered
    again = run("render", "--stack", "ecs", "--out", str(folder.parent))
    assert again.returncode == 0, again.stderr
    (folder / "mine.json").write_text("{}")
    refused = run("render", "--stack", "ecs", "--out", str(folder.parent))
    assert refused.returncode == 2 and "mine.json was not written by killsafe render" in refused.stderr
    (folder / "mine.json").unlink()


def test_a_kubernetes_stack_rendered_for_ecs_names_what_it_lacks(tmp_path: Path) -> None:
    result = run("render", "--stack", "prod", "--out", str(tmp_path), "--target", "ecs")
    assert result.returncode == 2
    assert (
        "stacks/Pulumi.prod.yaml (rendered with --target ecs): killsafe:workload.worker.max_job_seconds: 120 plus "
        "drain_margin_seconds (20) = 140 s exceeds ECS Fargate's 120 s stopTimeout"
    ) in result.stderr
    assert not tmp_path.joinpath("ecs").exists()


def test_check_names_a_file_it_cannot_read_back(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{}")
    result = run("check", "--stack", "ecs", "--manifests", str(tmp_path))
    assert result.returncode == 2
    assert f"error: {tmp_path}/notes.json: 'notes' is not <index>-<key>.<service>.<Operation>" in result.stderr
