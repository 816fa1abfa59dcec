"""The README tells the truth: its config reference is generated, its commands and examples work."""

from __future__ import annotations

import re

import yaml

from killsafe.config import parse_stack_config
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
