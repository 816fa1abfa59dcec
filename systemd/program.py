"""What `pulumi up` deploys for a stack whose target is systemd (called by stacks/__main__.py):
the rendered units installed on every host of `systemd.hosts` over SSH, one host after the other."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pulumi

from killsafe.budget import shutdown_budget
from killsafe.spec import StackConfig
from killsafe.systemd.build import prerequisites
from killsafe.systemd.component import SystemdWorkload


def deploy(stack: StackConfig) -> SystemdWorkload:
    spec = stack.workload
    if not spec.systemd.hosts:
        raise pulumi.RunError(
            f"stacks/Pulumi.{pulumi.get_stack()}.yaml: killsafe:workload.systemd.hosts is empty; list the VMs "
            "to install on (address, ssh_user, ssh_port), or use `killsafe render` and copy the folder yourself"
        )
    key_file = spec.systemd.ssh_private_key_file
    private_key = pulumi.Output.secret(Path(key_file).expanduser().read_text()) if key_file else None
    workload = SystemdWorkload(
        spec.name, spec, private_key=private_key, source=f"stacks/Pulumi.{pulumi.get_stack()}.yaml"
    )
    pulumi.export("hosts", workload.hosts)
    pulumi.export("units", workload.unit_names)
    pulumi.export("rollout", workload.rollout)
    pulumi.export("prerequisites", prerequisites(spec))
    pulumi.export("shutdown_budget", asdict(shutdown_budget(spec.worker)))
    return workload
