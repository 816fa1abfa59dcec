"""`killsafe` command line: render a stack to files (no Pulumi engine, no network), check it, lint any file.

Exit codes: 0 success, 1 `check` or `lint` found problems, 2 invalid configuration, bad input or usage
(nothing written).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from killsafe.budget import ShutdownBudget, shutdown_budget, web_budget
from killsafe.checks import errors
from killsafe.config import ConfigError, load_stack, parse_stack_config, stack_file
from killsafe.reference import config_reference
from killsafe.render import RenderError, write_files
from killsafe.spec import TARGETS, StackConfig
from killsafe.targets import Target, load_target

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="stack name: reads STACKS_DIR/Pulumi.<stack>.yaml")]
StacksDirOption = Annotated[Path, typer.Option("--stacks-dir", help="folder holding the stack files")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _load(stack: str, stacks_dir: Path) -> StackConfig:
    try:
        return load_stack(stack, stacks_dir)
    except ConfigError as exc:
        raise _fail(f"error: invalid configuration, nothing was written\n{exc}") from None


@app.command("render")
def render_command(
    stack: StackOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder; writes OUT/<target>/")],
    target: Annotated[str | None, typer.Option(help=f"render for another target: {', '.join(TARGETS)}")] = None,
    stacks_dir: StacksDirOption = Path("stacks"),
) -> None:
    """Write the stack's manifests/units as files (GitOps, VMs) and print the plan."""
    config = _load(stack, stacks_dir)
    source = str(stack_file(stack, stacks_dir))
    try:
        chosen = load_target(target or config.target)
    except RenderError as exc:
        raise _fail(f"error: {exc}; nothing was written") from None
    if chosen.name != config.target:
        config = _as_target(config, chosen.name, source)
    try:
        files = chosen.render(config, source)
        write_files(files, out)
    except RenderError as exc:
        raise _fail(f"error: {exc}; nothing was written") from None
    typer.echo(f"killsafe render: stack {stack} ({source}), target {chosen.name}")
    typer.echo(f"  wrote {len(files)} files to {out / chosen.name}/")
    for rendered in files:
        typer.echo(f"    {'/'.join(rendered.path.parts[1:])}")
    typer.echo(plan_text(config, chosen))


def _as_target(config: StackConfig, target: str, source: str) -> StackConfig:
    """The stack re-validated for another target (its limits and Redis modes apply)."""
    raw = {**config.model_dump(exclude_unset=True), "target": target}
    try:
        return parse_stack_config(raw, f"{source} (rendered with --target {target})")
    except ConfigError as exc:
        raise _fail(f"error: invalid configuration, nothing was written\n{exc}") from None


def plan_text(config: StackConfig, target: Target) -> str:
    """The derived shutdown budget and the prerequisites, as the summary shows them."""
    workload = config.workload
    budget = shutdown_budget(workload.worker)
    lines = ["", f"  shutdown budget, worker ({workload.name}):", *_budget_lines(budget, target.kill_deadline_name)]
    if workload.web is not None:
        wb = web_budget(workload.web)
        lines.append(
            f"  web: preStop {wb.prestop_seconds} s + request drain {wb.request_drain_seconds} s + reserve "
            f"= grace {wb.kill_deadline_seconds} s"
        )
    steps = target.prerequisites(config)
    if steps:
        lines += ["", "  before applying:"] + [f"    - {step}" for step in steps]
    return "\n".join(lines)


def _budget_lines(b: ShutdownBudget, kill_deadline_name: str) -> list[str]:
    return [
        f"    longest job        {b.max_job_seconds:>5} s   worker.max_job_seconds",
        f"    + drain margin     {b.drain_margin_seconds:>5} s   worker.drain_margin_seconds",
        f"    = kill deadline    {b.kill_deadline_seconds:>5} s   {kill_deadline_name}",
        f"    drain deadline     {b.drain_deadline_seconds:>5} s   KILLSAFE_SHUTDOWN_TIMEOUT_SECONDS "
        "(worker stops waiting, hands jobs back)",
        f"    job lock           {b.lock_duration_ms // 1000:>5} s   stalled check every "
        f"{b.stalled_interval_ms // 1000} s: a killed worker's job re-runs within {b.rerun_after_kill_seconds:g} s",
        f"    liveness stall     {b.liveness_stall_seconds:>5} s   /livez fails when jobs wait and none was processed",
    ]


@app.command("check")
def check_command(
    stack: StackOption,
    stacks_dir: StacksDirOption = Path("stacks"),
    manifests: Annotated[
        Path | None,
        typer.Option(help="check this rendered folder (OUT/<target>) instead of building it (finds hand edits)"),
    ] = None,
) -> None:
    """Validate the stack and run the checklist rules (exit 0 clean, 1 findings, 2 invalid config)."""
    config = _load(stack, stacks_dir)
    try:
        target = load_target(config.target)
    except RenderError as exc:
        raise _fail(f"error: {exc}") from None
    if manifests is not None and not manifests.is_dir():
        raise _fail(f"error: --manifests {manifests} is not a folder")
    try:
        objects = target.read_rendered(manifests) if manifests else target.objects(config)
    except RenderError as exc:
        raise _fail(f"error: {exc}") from None
    findings = target.rules.run(config.workload, objects)
    for finding in findings:
        typer.echo(str(finding))
    checked = f"{len(objects)} objects, {len(target.rules.rules)} rules"
    if errors(findings):
        typer.echo(f"killsafe check: {len(errors(findings))} finding(s) in {checked}", err=True)
        raise typer.Exit(1)
    warned = f", {len(findings)} warning(s)" if findings else ""
    typer.echo(f"killsafe check: stack {stack} is clean ({checked}{warned})")


@app.command("lint")
def lint_command(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Kubernetes YAML/JSON, ECS task definition JSON, systemd units, redis.conf, or folders"),
    ],
) -> None:
    """Check any stack's files for kill-at-any-moment hazards (exit 0 clean or warnings only, 1 errors, 2 bad input)."""
    from killsafe.lint import LintInputError, describe, lint_paths

    try:
        read, findings = lint_paths(paths)
    except LintInputError as exc:
        raise _fail(f"error: {exc}") from None
    for finding in findings:
        typer.echo(describe(finding))
    for skipped in read.skipped:
        typer.echo(f"skipped {skipped}", err=True)
    if not read.files:
        raise _fail("error: no lintable file among the paths given (see the skipped files above)")
    checked = f"{len(read.files)} file(s), {len(read.objects)} object(s)"
    failed, warned = len(errors(findings)), len(findings) - len(errors(findings))
    if failed:
        typer.echo(f"killsafe lint: {failed} error(s), {warned} warning(s) in {checked}", err=True)
        raise typer.Exit(1)
    if warned:
        typer.echo(f"killsafe lint: no errors, {warned} warning(s) in {checked} (warnings alone exit 0)")
    else:
        typer.echo(f"killsafe lint: clean ({checked})")


@app.command("config-reference")
def config_reference_command() -> None:
    """Print the stack-file reference (Markdown), generated from the spec."""
    sys.stdout.write(config_reference())


def main() -> None:
    app()
