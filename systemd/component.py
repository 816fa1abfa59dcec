"""`SystemdWorkload`: the rendered folder pushed to VMs over SSH (pulumi-command), then rolled out.

Thin on purpose: what is installed is `build_files(spec)` byte for byte (the same files `killsafe
render` writes; tests/systemd/test_component.py compares them), and how it is started is
`rollout_commands(spec)`, the same steps install.sh ends with. Per host, in order:

1. `<name>-<host>-upload-<file>`: each rendered file written to the host's staging folder
   (`/var/lib/killsafe/<name>/rendered`) from stdin, re-run when its content changes;
2. `<name>-<host>-install`: `install.sh --no-start` (files in place, credentials, daemon-reload,
   enable); its delete step disables and removes the units on `pulumi destroy`;
3. `<name>-<host>-rollout-NN`: one command per step, each waiting for the previous one: start the
   surge instance, restart the worker instances one at a time, stop the surge instance, restart the
   web, stop instances beyond worker.replicas.

Hosts are rolled one after the other (a host's first command depends on the previous host's last), so
at most one host's web is restarting at any time. Every command re-runs when any rendered file changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import pulumi
from pulumi_command import remote

from killsafe.render import RenderedFile
from killsafe.spec import HostSpec, WorkloadSpec
from killsafe.systemd.build import build_files, rollout_commands, units
from killsafe.systemd.layout import layout

TYPE_TOKEN = "killsafe:systemd:Workload"
STAGING_ROOT = "/var/lib/killsafe"


def staging_dir(spec: WorkloadSpec) -> str:
    return f"{STAGING_ROOT}/{spec.name}/rendered"


def upload_command(spec: WorkloadSpec, rendered: RenderedFile) -> str:
    inner = "/".join(rendered.path.parts[1:])
    return f"install -D -m {rendered.mode:o} /dev/stdin {staging_dir(spec)}/{inner}"


def install_command(spec: WorkloadSpec) -> str:
    return f"sh {staging_dir(spec)}/install.sh --no-start"


def uninstall_command(spec: WorkloadSpec) -> str:
    """`pulumi destroy`: stop and remove the units; the credentials under config_dir stay (delete them by hand)."""
    where = layout(spec)
    files = " ".join(f"{where.unit_dir}/{unit}" for unit in units(spec).all())
    return (
        f"systemctl disable --now {where.app_target}; systemctl stop '{spec.name}-worker@*.service'; "
        f"rm -f {files}; systemctl daemon-reload; rm -rf {staging_dir(spec)}"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


class SystemdWorkload(pulumi.ComponentResource):
    """A killsafe workload on systemd VMs: the rendered units installed and rolled out on every host.

    `hosts` defaults to `spec.systemd.hosts`; `private_key` (a secret Output, or None for the SSH agent)
    reaches every connection. A provider in `opts` is not needed: pulumi-command connects itself.
    """

    hosts: list[str]
    unit_names: list[str]
    rollout: list[str]

    def __init__(
        self,
        name: str,
        spec: WorkloadSpec,
        hosts: Sequence[HostSpec] | None = None,
        *,
        private_key: pulumi.Input[str] | None = None,
        source: str = "SystemdWorkload",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        targets = list(spec.systemd.hosts if hosts is None else hosts)
        files = build_files(spec, source)
        digest = hashlib.sha256("".join(f"{f.path}\0{f.mode}\0{f.content}\0" for f in files).encode()).hexdigest()
        steps = rollout_commands(spec)
        self.commands: dict[str, remote.Command] = {}
        previous: list[pulumi.Resource] = []
        for host in targets:
            connection = remote.ConnectionArgs(
                host=host.address, user=host.ssh_user, port=host.ssh_port, private_key=private_key
            )
            prefix = f"{name}-{_slug(host.address)}"
            uploads = [
                self._command(
                    f"{prefix}-upload-{_slug('/'.join(f.path.parts[1:]))}",
                    connection,
                    upload_command(spec, f),
                    previous,
                    triggers=[hashlib.sha256(f.content.encode()).hexdigest(), f.mode],
                    stdin=f.content,
                )
                for f in files
            ]
            last = self._command(
                f"{prefix}-install",
                connection,
                install_command(spec),
                uploads,
                triggers=[digest],
                delete=uninstall_command(spec),
            )
            for index, step in enumerate(steps):
                last = self._command(f"{prefix}-rollout-{index:02d}", connection, step, [last], triggers=[digest])
            previous = [last]
        self.hosts = [host.address for host in targets]
        self.unit_names = units(spec).all()
        self.rollout = steps
        self.register_outputs({"hosts": self.hosts, "unit_names": self.unit_names, "rollout": self.rollout})

    def _command(
        self,
        name: str,
        connection: remote.ConnectionArgs,
        create: str,
        depends_on: Sequence[pulumi.Resource],
        *,
        triggers: list[object],
        stdin: str | None = None,
        delete: str | None = None,
    ) -> remote.Command:
        command = remote.Command(
            name,
            connection=connection,
            create=create,
            update=create,
            delete=delete,
            stdin=stdin,
            triggers=triggers,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self.commands[name] = command
        return command
