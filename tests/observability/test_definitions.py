"""The alert definitions as data: thresholds from the spec, runbooks, labels, what each measures."""

from __future__ import annotations

from importlib import resources

import pytest

from killsafe import contract
from killsafe.observability import alerts as definitions
from killsafe.observability.alerts import AlertTiming, Selectors, alerts, duration
from killsafe.observability.prometheus import rule_groups, template
from tests.kubernetes.k8s_specs import make_spec

ALL = Selectors(worker='job="w"', kube_state='namespace="n"', redis='job="r"')
RUNBOOKS = resources.files("killsafe.observability") / "runbooks"
OTHER_SOURCES = {
    definitions.KSM_RESTARTS,
    definitions.KSM_LAST_TERMINATED,
    definitions.REDIS_MEMORY_USED,
    definitions.REDIS_CONFIG,
    definitions.REDIS_EVICTED,
}


def _all(**overrides: object) -> list[definitions.Alert]:
    spec = make_spec(**overrides)
    return alerts(spec, AlertTiming.for_spec(spec.alerts), ALL)


def test_the_issue_s_alerts_exist_with_one_runbook_page_each() -> None:
    names = [a.name for a in _all()]
    assert names == [
        "QueueStalled",
        "WorkerDown",
        "FailedJobsHigh",
        "DeadLetterGrowing",
        "JobsInterrupted",
        "JobsTimedOut",
        "WorkerRestarting",
        "WorkerOOMKilled",
        "RedisMemoryHigh",
        "RedisEvictionPolicyUnsafe",
    ]
    pages = {page.name for page in RUNBOOKS.iterdir() if page.name.endswith(".md")}
    assert pages == {f"{name}.md" for name in names}, "one page per alert, no orphans"
    for alert in _all():
        page = (RUNBOOKS / alert.runbook).read_text()
        assert page.startswith(f"# {alert.name}\n")
        assert "First thing to do" in page or "first thing to do" in page


def test_thresholds_come_from_the_spec() -> None:
    by_name = {
        a.name: a
        for a in _all(
            alerts={
                "failed_jobs_per_hour": 7,
                "stalled_minutes": 9,
                "worker_down_minutes": 4,
                "interrupted_jobs_per_hour": 2,
                "restarts_per_hour": 5,
                "redis_memory_percent": 66,
            }
        )
    }
    assert by_name["FailedJobsHigh"].expr.endswith("> 7")
    assert by_name["FailedJobsHigh"].conditions[0].threshold == 7
    assert "[9m]" in by_name["QueueStalled"].expr and "offset 9m" in by_name["QueueStalled"].expr
    assert by_name["WorkerDown"].for_seconds == 240
    assert by_name["JobsInterrupted"].expr.endswith("> 2")
    assert by_name["WorkerRestarting"].expr.endswith("> 5")
    assert by_name["RedisMemoryHigh"].expr.endswith("> 66")
    assert by_name["RedisMemoryHigh"].conditions[0].threshold == pytest.approx(0.66)


def test_every_condition_names_a_contract_metric_or_a_documented_source() -> None:
    metrics = {value for name, value in vars(contract).items() if name.startswith("METRIC_")}
    for alert in _all():
        for condition in alert.conditions:
            assert condition.metric in metrics | OTHER_SOURCES, (alert.name, condition.metric)
            expected_source = "worker" if condition.metric in metrics else alert.source
            assert alert.source == expected_source
            assert condition.metric in alert.expr


def test_worker_down_expects_the_replicas_or_the_autoscaler() -> None:
    [fixed] = [a for a in _all(worker={"replicas": 4}) if a.name == "WorkerDown"]
    assert fixed.expr.endswith("< 4") and fixed.conditions[0].compare_to is None
    spec = make_spec(worker={"autoscaling": {"min_replicas": 2, "max_replicas": 5}})
    selectors = Selectors(worker='job="w"', expected_workers="max(desired)")
    [scaled] = [a for a in alerts(spec, AlertTiming.for_spec(spec.alerts), selectors) if a.name == "WorkerDown"]
    assert scaled.expr.endswith("< (max(desired) or vector(2))")
    assert scaled.conditions[0].compare_to == "desired_workers" and scaled.conditions[0].threshold == 2


def test_sources_the_target_lacks_are_skipped() -> None:
    spec = make_spec()
    names = {a.name for a in alerts(spec, AlertTiming.for_spec(spec.alerts), Selectors(worker='job="w"'))}
    assert not names & {"WorkerRestarting", "WorkerOOMKilled", "RedisMemoryHigh", "RedisEvictionPolicyUnsafe"}


def test_labels_routing_and_runbook_links() -> None:
    spec = make_spec(alerts={"labels": {"team": "payments"}, "runbook_base_url": "https://wiki.example.com/rb/"})
    groups = rule_groups(spec, AlertTiming.for_spec(spec.alerts), ALL)
    for rule in groups["groups"][0]["rules"]:
        assert rule["labels"]["team"] == "payments" and rule["labels"]["workload"] == "emails"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["runbook_url"] == f"https://wiki.example.com/rb/{rule['alert']}.md"
        assert "First: " in rule["annotations"]["description"]


def test_disabled_alerts_emit_nothing() -> None:
    spec = make_spec(alerts={"enabled": False})
    assert rule_groups(spec, AlertTiming.for_spec(spec.alerts), ALL) == {"groups": []}


def test_placeholders_become_prometheus_templates() -> None:
    assert template("queue {queue} {reason} {pod} at {value}") == (
        "queue {{ $labels.queue }} {{ $labels.reason }} {{ $labels.pod }} at {{ $value | humanize }}"
    )


def test_durations_and_default_timing() -> None:
    assert [duration(s) for s in (3600, 300, 90, 1)] == ["1h", "5m", "90s", "1s"]
    timing = AlertTiming.for_spec(make_spec(alerts={"dead_letter_growing_minutes": 20}).alerts)
    assert timing.dead_letter_step_seconds == 300 and timing.event_window_seconds == 3600
