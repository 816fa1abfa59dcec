"""Role guessing for objects that carry no role label."""

from __future__ import annotations

from killsafe.lint.roles import guess


def test_a_dashboard_that_reads_the_queue_env_is_not_a_worker() -> None:
    """The job dashboard gets KILLSAFE_QUEUES and, as a unit, declares no port: it must not be taken
    for a worker (which would demand a watchdog and a job budget of it)."""
    role = guess(
        labels=[{}],
        commands=[["/opt/emails/venv/bin/killsafe-dashboard"]],
        images=[],
        env_names=["KILLSAFE_QUEUES", "REDIS_URL_FILE"],
        exposes_ports=False,
        name="emails-dashboard.service",
    )
    assert role == "other"


def test_an_unlabelled_queue_consumer_without_ports_is_still_a_worker() -> None:
    role = guess(
        labels=[{}],
        commands=[["python", "-m", "app.consume"]],
        images=[],
        env_names=["JOB_QUEUE"],
        exposes_ports=False,
        name="consume",
    )
    assert role == "worker"
