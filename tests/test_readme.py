"""The README tells the truth: its config reference is generated, its commands and examples work."""

from __future__ import annotations

import re

import yaml

from killsafe.config import load_stack, parse_stack_config
from killsafe.reference import config_reference
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_config_reference_is_generated_from_the_spec() -> None:
    match = re.search(r"<!-- BEGIN config-reference -->\n(.*?)<!-- END config-reference -->", README, re.S)
    assert match, "README lacks the config-reference markers"
    assert match.group(1) == config_reference(), "regenerate with: killsafe config-reference"


def test_quickstart_is_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    [block] = _blocks(_section("Quickstart"), "sh")
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == [".ci/killsafe render --stack dev --out out", ".ci/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^exec bash \.ci/test\b", ci, re.M), "CI must run the README's test command"


def test_workload_example_is_a_valid_stack() -> None:
    [block] = _blocks(_section("Describe a workload"), "yaml")
    config = yaml.safe_load(block)["config"]
    stack = parse_stack_config({k.removeprefix("killsafe:"): v for k, v in config.items()}, "README.md")
    assert stack.workload.worker.max_job_seconds == 120


def test_platform_repo_example_runs_under_the_mocked_engine() -> None:
    from tests.kubernetes.test_component import k8s_children, run_under_mocks

    [block] = _blocks(_section("Use the components in your platform repo"), "python")
    run = run_under_mocks(lambda: exec(compile(block, "README.md", "exec"), {}))
    assert run.error is None, run.error
    children = k8s_children(run)
    assert {c.inputs["kind"] for c in children} >= {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    assert all("::cluster::" in c.provider for c in children), "every child uses the provider from the example"


def test_alerts_section_lists_every_alert_the_definitions_emit() -> None:
    """The README's alert table is the operator's index: every emitted alert has a row with its
    severity, and no row names an alert that does not exist."""
    from killsafe.observability.alerts import AlertTiming, Selectors, alerts

    spec = load_stack("staging", REPO / "stacks").workload
    emitted = {
        a.name: a.severity
        for a in alerts(spec, AlertTiming.for_spec(spec.alerts), Selectors(worker="x", kube_state="x", redis="x"))
    }
    rows = re.findall(r"^\| (\w+) \| (critical|warning|info) \|", _section("Alerts"), re.M)
    assert dict(rows) == emitted


def test_autoscaling_section_covers_signal_scale_from_zero_and_scale_in_safety() -> None:
    section = _section("Autoscaling")
    for topic in ("**Signal.**", "**Scale from zero.**", "**Scale-in never loses a job.**"):
        assert topic in section
