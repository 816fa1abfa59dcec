"""Alerts, dashboards and autoscaling, defined once over the worker contract's metrics.

    alerts.py       the alerts as data (`Alert`, `Condition`), thresholds from `spec.alerts`,
                    windows from `AlertTiming`, each with its PromQL and a runbook page
    prometheus.py   the Prometheus emitter: alerts -> rule groups (PrometheusRule spec, rules file)
    dashboard.py    the Grafana dashboard (grafana-foundation-sdk builders) over the same series
    autoscaling.py  the queue-autoscaling signal: which Redis keys count and how they become workers
    runbooks/       one Markdown page per alert, shipped as package data

Nothing here knows a target. A target supplies `Selectors` (where its series are: namespace and
scrape job on Kubernetes, a static job on a VM) and decides which sources it has (kube-state-metrics,
a Redis exporter).

Writing a new emitter (say CloudWatch alarms for ECS):

    from killsafe.observability.alerts import AlertTiming, Selectors, alerts
    for alert in alerts(spec, AlertTiming.for_spec(spec.alerts), Selectors(worker="")):
        for condition in alert.conditions:   # all must hold (alert.match == "all") or any ("any")
            condition.metric, condition.transform, condition.combine, condition.group_by,
            condition.comparison, condition.threshold, condition.window_seconds
        alert.for_seconds, alert.severity, alert.summary, alert.description, alert.first_action,
        alert.runbook

`transform` "increase" is a counter's increase over the window (a CloudWatch Sum of the per-period
deltas), "growth" a gauge's change over the window, "present" a source watched that long; `combine`
says how replicas' series aggregate ("max" for the queue gauges every replica reports alike, "sum"
for per-process counters). `expr` is PromQL and only for Prometheus emitters; `source` tells whether
an alert needs kube-state-metrics or a Redis exporter, which a target without them skips (or maps to
its own metric, e.g. ECS RunningTaskCount for WorkerDown). The autoscaling signal is target-neutral
the same way: `backlog_keys(spec)` and `backlog(...)` define what to count, `desired_workers` the
arithmetic.
"""
