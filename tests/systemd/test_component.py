"""SystemdWorkload and the systemd stack program under the mocked Pulumi engine: the exact commands,
their order (one instance at a time, one host after the other) and the files, byte for byte."""

from __future__ import annotations

from typing import Any

from killsafe.config import load_stack, parse_stack_config
from killsafe.spec import HostSpec, WorkloadSpec
from killsafe.systemd.build import build_files, rollout_commands
from killsafe.systemd.component import SystemdWorkload
from tests.kubernetes.test_component import STACKS, Run, run_under_mocks
from tests.kubernetes.test_component_program import run_program, stack_config

COMMAND = "command:remote:Command"
HOSTS = [HostSpec(address="10.0.1.12"), HostSpec(address="vm-2.internal", ssh_user="deploy", ssh_port=2222)]
STAGING = "/var/lib/killsafe/emails/rendered"


def vm_spec() -> WorkloadSpec:
    return load_stack("vm", STACKS).workload


def connection(command: Any) -> dict[str, Any]:
    """The SSH target (pulumi-command sends `connection` as a secret, with its own defaults added)."""
    value = command.inputs["connection"]["value"]
    return {"host": value["host"], "user": value["user"], "port": int(value["port"])}


def commands(run: Run) -> list[Any]:
    return run.monitor.of_type(COMMAND)


def test_every_rendered_file_is_uploaded_byte_for_byte_then_installed_and_rolled():
    spec = vm_spec()
    run = run_under_mocks(lambda: SystemdWorkload("emails", spec, HOSTS, source="stacks/Pulumi.vm.yaml"))
    assert run.error is None, run.error
    files = build_files(spec, "stacks/Pulumi.vm.yaml")
    first = [c for c in commands(run) if c.name.startswith("emails-10.0.1.12-")]
    uploads = {c.inputs["create"]: c.inputs["stdin"] for c in first if "-upload-" in c.name}
    assert uploads == {
        f"install -D -m {f.mode:o} /dev/stdin {STAGING}/{'/'.join(f.path.parts[1:])}": f.content for f in files
    }
    assert "install -D -m 755 /dev/stdin /var/lib/killsafe/emails/rendered/install.sh" in uploads
    for pushed in ("prometheus/rules.yml", "grafana/dashboard.json", "units/emails-dashboard.service"):
        assert f"install -D -m 644 /dev/stdin {STAGING}/{pushed}" in uploads, pushed
    ordered = [c.inputs["create"] for c in first if "-upload-" not in c.name]
    assert ordered == [
        f"sh {STAGING}/install.sh --no-start",
        "systemctl start emails-redis.service",
        "systemctl start emails-worker@8083.service",
        "systemctl restart emails-worker@8080.service",
        "systemctl restart emails-worker@8081.service",
        "systemctl restart emails-worker@8082.service",
        "systemctl stop emails-worker@8083.service",
        "systemctl restart emails-web.service",
        "systemctl restart emails-dashboard.service",
        "systemctl start emails.target",
        "for unit in $(systemctl list-units --plain --no-legend --state=active 'emails-worker@*.service' | cut -d' ' "
        '-f1); do case " emails-worker@8080.service emails-worker@8081.service emails-worker@8082.service " in '
        '*" $unit "*) ;; *) systemctl stop "$unit" ;; esac; done',
    ]
    install = run.monitor.one(COMMAND, "emails-10.0.1.12-install")
    assert install.inputs["delete"].startswith("systemctl disable --now emails.target;")
    assert connection(install) == {"host": "10.0.1.12", "user": "root", "port": 22}
    second = run.monitor.one(COMMAND, "emails-vm-2.internal-install")
    assert connection(second) == {"host": "vm-2.internal", "user": "deploy", "port": 2222}


def test_each_step_waits_for_the_one_before_and_hosts_roll_one_after_the_other():
    run = run_under_mocks(lambda: SystemdWorkload("emails", vm_spec(), HOSTS))
    by_urn = {c.urn: c.name for c in commands(run)}
    deps = {c.name: {by_urn[d] for d in c.dependencies if d in by_urn} for c in commands(run)}
    component = run.monitor.one("killsafe:systemd:Workload", "emails")
    assert all(c.parent == component.urn for c in commands(run))
    last = len(rollout_commands(vm_spec())) - 1
    for index in range(1, last + 1):
        assert deps[f"emails-10.0.1.12-rollout-{index:02d}"] == {f"emails-10.0.1.12-rollout-{index - 1:02d}"}
    assert deps["emails-10.0.1.12-rollout-00"] == {"emails-10.0.1.12-install"}
    assert all(name.startswith("emails-10.0.1.12-upload-") for name in deps["emails-10.0.1.12-install"])
    # the second host starts only after the first host's last step
    assert deps["emails-vm-2.internal-upload-install.sh"] == {f"emails-10.0.1.12-rollout-{last:02d}"}
    assert run.monitor.outputs[component.urn]["hosts"] == ["10.0.1.12", "vm-2.internal"]


def test_a_changed_file_changes_every_trigger():
    spec = vm_spec()
    changed = spec.model_copy(update={"env": {"GREETING": "hi"}})
    one = run_under_mocks(lambda: SystemdWorkload("emails", spec, HOSTS[:1]))
    two = run_under_mocks(lambda: SystemdWorkload("emails", changed, HOSTS[:1]))
    before = {c.name: c.inputs["triggers"] for c in commands(one)}
    after = {c.name: c.inputs["triggers"] for c in commands(two)}
    assert before["emails-10.0.1.12-rollout-03"] != after["emails-10.0.1.12-rollout-03"]
    assert before["emails-10.0.1.12-upload-env-worker.env"] != after["emails-10.0.1.12-upload-env-worker.env"]
    assert before["emails-10.0.1.12-upload-units-emails.target"] == after["emails-10.0.1.12-upload-units-emails.target"]


def test_the_vm_stack_program_installs_on_its_hosts_with_the_stack_file_as_source():
    config = stack_config("vm")
    workload = config["killsafe:workload"]
    config["killsafe:workload"] = {**workload, "systemd": {"hosts": [{"address": "10.0.1.12"}]}}
    run, outputs = run_program("vm", config)
    assert run.error is None, run.error
    spec = parse_stack_config({k.split(":", 1)[1]: v for k, v in config.items()}, "x").workload
    uploads = {c.inputs["create"]: c.inputs["stdin"] for c in commands(run) if "-upload-" in c.name}
    assert sorted(uploads.values()) == sorted(f.content for f in build_files(spec, "stacks/Pulumi.vm.yaml"))
    assert outputs["hosts"] == ["10.0.1.12"]


def test_the_vm_stack_without_hosts_says_what_to_add():
    run, _ = run_program("vm", stack_config("vm"))
    assert run.error is not None and "killsafe:workload.systemd.hosts is empty" in str(run.error)
    assert commands(run) == []


def test_the_readme_example_runs_under_the_mocked_engine():
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## What the systemd target creates\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section
    [block] = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    run = run_under_mocks(lambda: exec(compile(block, "README.md", "exec"), {}))
    assert run.error is None, run.error
    assert run.monitor.one(COMMAND, "emails-10.0.1.12-install").inputs["create"].endswith("install.sh --no-start")
