"""The Pulumi program (stacks/__main__.py) deploying the ecs stack under the mocked engine."""

from __future__ import annotations

import pulumi

from killsafe.config import load_stack
from killsafe.ecs import build
from tests.ecs.harness import AwsMocks, aws_children
from tests.kubernetes.test_component import STACKS
from tests.kubernetes.test_component_program import run_program, stack_config


def test_pulumi_up_of_the_ecs_stack_creates_the_workload_and_exports() -> None:
    run, exports = run_program("ecs", stack_config("ecs"), mocks=AwsMocks())
    assert run.error is None, run.error
    (component,) = run.monitor.of_type("killsafe:ecs:Workload")
    assert component.name == "emails"
    primaries = [r for r in build.build_requests(load_stack("ecs", STACKS).workload) if r.amends is None]
    assert len(aws_children(run)) == len(primaries) == 67
    assert exports["alarm_topic_arn"] == "arn:mock:emails-alarm-topic"
    assert exports["worker_service"] == "emails-worker"
    assert exports["web_service"] == "emails-web"
    assert exports["log_group"] == "/ecs/emails"
    assert exports["cluster_arn"] == "arn:mock:emails-cluster"
    assert exports["shutdown_budget"]["kill_deadline_seconds"] == 105  # type: ignore[index]


def test_the_fargate_cap_stops_pulumi_up_before_anything_is_created() -> None:
    config = stack_config("ecs")
    config["killsafe:workload"]["worker"]["max_job_seconds"] = 300
    run, _ = run_program("ecs", config)
    assert isinstance(run.error, pulumi.RunError)
    assert (
        "stacks/Pulumi.ecs.yaml: killsafe:workload.worker.max_job_seconds: 300 plus drain_margin_seconds (15) = 315 s "
        "exceeds ECS Fargate's 120 s stopTimeout"
    ) in str(run.error)
    assert run.monitor.registrations == []
