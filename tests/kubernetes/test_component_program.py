"""The Pulumi program (stacks/__main__.py) under the mocked engine, with real stack files as config.

Config reaches the program the way the Pulumi CLI passes it: every `config:` entry of
stacks/Pulumi.<stack>.yaml as text (mappings as JSON), through `pulumi.runtime.set_all_config`; the
program directory then runs as `pulumi up` runs it (`runpy.run_path("stacks/")`).
"""

from __future__ import annotations

import json
import runpy
from typing import Any

import pulumi
import yaml

from killsafe.kubernetes import build
from tests.kubernetes.test_component import (
    RANDOM_PASSWORD_TYPE,
    SECRET_TYPE,
    STACKS,
    Run,
    k8s_children,
    run_under_mocks,
    stack_spec,
)

PROVIDER_TYPE = "pulumi:providers:kubernetes"


def stack_config(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    return dict(document["config"])


def as_pulumi_passes_it(config: dict[str, Any]) -> dict[str, str]:
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


def run_program(
    stack: str, config: dict[str, Any], mocks: pulumi.runtime.Mocks | None = None
) -> tuple[Run, dict[str, Any]]:
    """Run stacks/ as the program of `stack`; returns the engine log and the resolved stack exports."""
    exports: dict[str, Any] = {}

    def program() -> Any:
        runpy.run_path(str(STACKS), run_name="__main__")
        root = pulumi.runtime.get_root_resource()
        assert root is not None
        return pulumi.Output.all(**root.outputs).apply(exports.update)  # type: ignore[attr-defined]

    run = run_under_mocks(program, stack=stack, config=as_pulumi_passes_it(config), mocks=mocks)
    return run, exports


def test_dev_renders_yaml_through_an_explicit_provider_used_by_every_child() -> None:
    run, exports = run_program("dev", stack_config("dev"))
    spec = stack_spec("dev")
    assert run.error is None
    (provider,) = run.monitor.of_type(PROVIDER_TYPE)
    assert provider.inputs["renderYamlToDirectory"] == "out/pulumi-dev"
    children = k8s_children(run)
    assert len(children) > 10
    assert {child.provider for child in children} == {f"{provider.urn}::{provider.name}-id"}
    (component,) = run.monitor.of_type("killsafe:kubernetes:Workload")
    assert component.name == "emails"

    assert exports["namespace"] == "emails-dev"
    assert exports["worker_deployment"] == "emails-worker"
    assert exports["web_service"] == "emails-web"
    assert exports["redis_secret"] == build.redis_secret_name(spec)
    assert exports["rendered_yaml_directory"] == "out/pulumi-dev"
    assert exports["shutdown_budget"]["kill_deadline_seconds"] == 75


def test_rendered_yaml_gets_no_password_but_the_commands_to_create_the_secret() -> None:
    """pulumi-kubernetes writes Secret values into rendered files in plain text: none is generated."""
    run, exports = run_program("dev", stack_config("dev"))
    assert run.error is None
    assert not run.monitor.of_type(SECRET_TYPE)
    assert not run.monitor.of_type(RANDOM_PASSWORD_TYPE)
    assert exports["prerequisites"] == build.prerequisites(stack_spec("dev"))
    assert any("create secret generic emails-redis-auth" in step for step in exports["prerequisites"])


def test_rendering_protects_nothing_a_cluster_stack_protects_its_data() -> None:
    """Rendered files hold no data; a protected child would only make `pulumi destroy -s dev` fail."""
    run, _ = run_program("dev", stack_config("dev"))
    assert run.error is None
    assert not [r.name for r in run.monitor.registrations if r.protect]
    run, _ = run_program("staging", stack_config("staging"))
    assert {r.name for r in run.monitor.registrations if r.protect} == {"emails-staging", "emails-redis"}


def test_a_cluster_stack_with_in_cluster_redis_generates_its_secret() -> None:
    config = stack_config("staging")
    run, exports = run_program("staging", config)
    assert run.error is None
    assert not run.monitor.of_type(PROVIDER_TYPE)
    assert len(run.monitor.of_type(SECRET_TYPE)) == 1
    assert len(run.monitor.of_type(RANDOM_PASSWORD_TYPE)) == 1
    assert "prerequisites" not in exports


def test_prod_uses_the_ambient_provider() -> None:
    run, exports = run_program("prod", stack_config("prod"))
    assert run.error is None
    assert not run.monitor.of_type(PROVIDER_TYPE)
    assert {child.provider for child in k8s_children(run)} == {""}
    assert exports["namespace"] == "emails"
    assert "rendered_yaml_directory" not in exports


def test_an_invalid_config_stops_before_anything_is_created() -> None:
    config = stack_config("dev")
    config["killsafe:workload"]["worker"]["max_job_seconds"] = -5
    run, _ = run_program("dev", config)
    assert isinstance(run.error, pulumi.RunError)
    message = str(run.error)
    assert "stacks/Pulumi.dev.yaml: killsafe:workload.worker.max_job_seconds: -5 must be >= 1" in message
    assert run.monitor.registrations == []


def test_a_misspelt_key_is_an_error_not_a_deploy_to_the_real_cluster() -> None:
    config = stack_config("dev")
    config["killsafe:render_yaml_to_dir"] = config.pop("killsafe:render_yaml_to_directory")
    run, _ = run_program("staging", config)
    assert isinstance(run.error, pulumi.RunError)
    message = str(run.error)
    assert "stacks/Pulumi.staging.yaml: killsafe:render_yaml_to_dir:" in message
    assert "did you mean render_yaml_to_directory?" in message
    assert run.monitor.registrations == []


def test_other_keys_of_the_stack_are_left_to_their_owners() -> None:
    config = {**stack_config("prod"), "kubernetes:context": "prod-cluster", "aws:region": "eu-west-1"}
    run, _ = run_program("prod", config)
    assert run.error is None
