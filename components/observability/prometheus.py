"""The Prometheus emitter: alert definitions -> rule groups (the `groups:` of a rules file).

One shape serves every Prometheus consumer: the Kubernetes PrometheusRule's `spec`, a plain rules
file for Prometheus on a VM (systemd target), and the end-to-end test, which runs the same output
with seconds-long windows in a real Prometheus. `promtool check rules` accepts it as is.
"""

from __future__ import annotations

import re
from typing import Any

from killsafe.observability.alerts import Alert, AlertTiming, Selectors, alerts, duration
from killsafe.spec import WorkloadSpec

RUNBOOK_DIR = "components/observability/runbooks"
"""Where the runbooks live in the killsafe repository (shipped as package data too)."""

_PLACEHOLDER = re.compile(r"\{(queue|reason|pod|name|instance|value)\}")


def group_name(spec: WorkloadSpec) -> str:
    return f"killsafe-{spec.name}"


def rule_groups(spec: WorkloadSpec, timing: AlertTiming, selectors: Selectors) -> dict[str, Any]:
    """`{"groups": [...]}` with one group holding every alert; no groups when alerts are disabled."""
    rules = [alerting_rule(spec, alert) for alert in alerts(spec, timing, selectors)]
    return {"groups": [{"name": group_name(spec), "rules": rules}] if rules else []}


def alerting_rule(spec: WorkloadSpec, alert: Alert) -> dict[str, Any]:
    annotations = {
        "summary": template(alert.summary),
        "description": template(f"{alert.description} First: {alert.first_action}."),
        "runbook": f"{alert.runbook} in killsafe's {RUNBOOK_DIR}",
    }
    if spec.alerts.runbook_base_url is not None:
        annotations["runbook_url"] = spec.alerts.runbook_base_url + alert.runbook
    rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
    if alert.for_seconds:
        rule["for"] = duration(alert.for_seconds)
    rule["labels"] = dict(alert.labels)
    rule["annotations"] = annotations
    return rule


def template(text: str) -> str:
    """`{queue}` -> `{{ $labels.queue }}`, `{value}` -> `{{ $value | humanize }}` (Prometheus templates)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return "{{ $value | humanize }}" if name == "value" else f"{{{{ $labels.{name} }}}}"

    return _PLACEHOLDER.sub(fill, text)
