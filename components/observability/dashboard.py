"""The Grafana dashboard, built with Grafana's own typed builders (grafana-foundation-sdk).

Panels read the same contract metrics the alerts do, through the same `Selectors`, so a dashboard
never shows a series the alerts do not see: depth by state, throughput, failure ratio, duration
quantiles, interrupted and timed-out jobs, readiness, worker memory, restarts (kube-state-metrics, or
node_exporter's systemd collector on VMs), Redis memory (when an exporter exists), and the web tier when
the target scrapes it (requests, 5xx ratio, POST outcomes, readiness). The result is plain dashboard
JSON, for any target's Grafana.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from killsafe import contract
from killsafe.observability.alerts import (
    KSM_RESTARTS,
    NODE_SYSTEMD_RESTARTS,
    REDIS_MEMORY_MAX,
    REDIS_MEMORY_USED,
    Selectors,
)
from killsafe.spec import WorkloadSpec

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
QUEUE = 'queue=~"$queue"'
SERVER_ERRORS = 'status=~"5.."'


def dashboard_uid(spec: WorkloadSpec, scope: str) -> str:
    """Stable per workload and scope (namespace, host), within Grafana's 40-character uid limit."""
    digest = hashlib.sha256(f"{spec.name}/{scope}".encode()).hexdigest()[:12]
    return f"killsafe-{spec.name[:18]}-{digest}"


def _sel(base: str, *extra: str) -> str:
    return "{" + ",".join(part for part in (base, *extra) if part) + "}"


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _series(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .legend(common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST))
        .span(12)
        .height(8)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def build_dashboard(spec: WorkloadSpec, selectors: Selectors, scope: str) -> dict[str, Any]:
    """The dashboard as JSON data (what Grafana imports); `scope` names where the workload runs."""
    s = selectors.worker
    q = _sel(s, QUEUE)
    completed = f"sum by (queue) (rate({contract.METRIC_JOBS_COMPLETED}{q}[{RATE}]))"
    failed = f"sum by (queue) (rate({contract.METRIC_JOBS_FAILED}{q}[{RATE}]))"
    buckets = f"sum by (le, queue) (rate({contract.METRIC_JOB_DURATION}_bucket{q}[{RATE}]))"
    board = (
        dashboard.Dashboard(f"killsafe: {spec.name} ({scope})")
        .uid(dashboard_uid(spec, scope))
        .description("Queue workers deployed by killsafe: every panel reads the worker contract's metrics.")
        .tags(["killsafe", spec.name])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("queue")
            .label("Queue")
            .datasource(DATASOURCE)
            .query(f"label_values({contract.METRIC_QUEUE_JOBS}{_sel(s)}, queue)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(dashboard.Row("Queues"))
        .with_panel(
            _series(
                "Jobs by state",
                "Queue depth sampled by the workers (max over replicas: each reports the same queue).",
                "short",
                _query(f"max by (queue, state) ({contract.METRIC_QUEUE_JOBS}{q})", "{{queue}} {{state}}"),
            )
        )
        .with_panel(
            _series(
                "Throughput",
                "Jobs completed per second, all workers.",
                "ops",
                _query(completed, "{{queue}} completed"),
                _query(failed, "{{queue}} failed attempts"),
            )
        )
        .with_panel(
            _series(
                "Failure ratio",
                "Failed attempts over finished attempts.",
                "percentunit",
                _query(f"{failed} / ({completed} + {failed})", "{{queue}}"),
            )
        )
        .with_panel(
            _series(
                "Job duration",
                "Handler run time of finished attempts (quantiles over all workers).",
                "s",
                *(
                    _query(f"histogram_quantile({quantile}, {buckets})", f"{{{{queue}}}} p{int(quantile * 100)}")
                    for quantile in (0.5, 0.95, 0.99)
                ),
            )
        )
        .with_row(dashboard.Row("Workers"))
        .with_panel(
            _series(
                "Workers ready",
                "Worker processes scraped, and those whose readiness passes (Redis reachable, registered).",
                "short",
                _query(f"sum({contract.METRIC_WORKER_READY}{_sel(s)})", "ready"),
                _query(f"count(up{_sel(s)} == 1)", "scraped"),
            )
        )
        .with_panel(
            stat.Panel()
            .title("Since last completed job")
            .description("Per queue, the most recent completion by any worker.")
            .unit("s")
            .datasource(DATASOURCE)
            .span(12)
            .height(8)
            .with_target(
                _query(
                    f"time() - max by (queue) ({contract.METRIC_LAST_JOB_COMPLETED}{q} > 0)",
                    "{{queue}}",
                )
            )
        )
        .with_panel(
            _series(
                "Interrupted jobs by reason",
                "Jobs stopped before they finished and handed back (drain deadline, child crash or OOM, lost lock).",
                "short",
                _query(
                    f"sum by (queue, reason) (increase({contract.METRIC_JOBS_INTERRUPTED}{q}[{RATE}]))",
                    "{{queue}} {{reason}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Worker memory",
                "Each worker's working set against its limit: it drains and restarts at memory_drain_percent.",
                "percentunit",
                _query(
                    f"max by (instance) ({contract.METRIC_WORKER_MEMORY}{_sel(s)} "
                    f"/ ({contract.METRIC_WORKER_MEMORY_LIMIT}{_sel(s)} > 0))",
                    "{{instance}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Memory-pressure restarts",
                "Workers that drained and exited for a restart above their memory threshold (before an OOM kill).",
                "short",
                _query(
                    f"sum(increase({contract.METRIC_MEMORY_PRESSURE_RESTARTS}{_sel(s)}[{RATE}]))",
                    "restarts",
                ),
            )
        )
        .with_panel(
            _series(
                "Timed-out attempts",
                "Attempts stopped at max_job_seconds.",
                "short",
                _query(f"sum by (queue) (increase({contract.METRIC_JOBS_TIMED_OUT}{q}[{RATE}]))", "{{queue}}"),
            )
        )
    )
    if selectors.kube_state is not None:
        board = board.with_panel(
            _series(
                "Worker restarts",
                "Container restarts (kube-state-metrics).",
                "short",
                _query(f"sum by (pod) (increase({KSM_RESTARTS}{_sel(selectors.kube_state)}[{RATE}]))", "{{pod}}"),
            )
        )
    if selectors.systemd_units is not None:
        units = _sel(selectors.systemd_units)
        board = board.with_panel(
            _series(
                "Worker restarts",
                "Restarts of the worker units by systemd (node_exporter's systemd collector).",
                "short",
                _query(
                    f"sum by (instance, name) (increase({NODE_SYSTEMD_RESTARTS}{units}[{RATE}]))",
                    "{{instance}} {{name}}",
                ),
            )
        )
    if selectors.redis is not None:
        r = _sel(selectors.redis)
        board = board.with_panel(
            _series(
                "Redis memory",
                "Used memory against maxmemory (noeviction: a full Redis refuses writes).",
                "bytes",
                _query(f"max({REDIS_MEMORY_USED}{r})", "used"),
                _query(f"max({REDIS_MEMORY_MAX}{r})", "maxmemory"),
            )
        )
    if selectors.web is not None:
        board = _web_panels(board, selectors.web)
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def _web_panels(board: dashboard.Dashboard, w: str) -> dashboard.Dashboard:
    """The web tier from its own metrics port: traffic, server errors, what became of each POST, readiness."""
    requests = f"rate({contract.METRIC_WEB_REQUESTS}{_sel(w)}[{RATE}])"
    errors = f"rate({contract.METRIC_WEB_REQUESTS}{_sel(w, SERVER_ERRORS)}[{RATE}])"
    submitted = f"rate({contract.METRIC_WEB_JOBS_SUBMITTED}{_sel(w, QUEUE)}[{RATE}])"
    return (
        board.with_row(dashboard.Row("Web"))
        .with_panel(
            _series(
                "Web requests",
                "Requests answered per second, by route template and status code (all web pods).",
                "reqps",
                _query(f"sum by (route, status) ({requests})", "{{route}} {{status}}"),
            )
        )
        .with_panel(
            _series(
                "Web 5xx ratio",
                "Server errors over all answers. 503s on POST /jobs mean Redis was unreachable or the pod was "
                "draining (see Jobs submitted by outcome).",
                "percentunit",
                _query(f"(sum({errors}) or vector(0)) / sum({requests})", "5xx"),  # 0, not "no data", without errors
            )
        )
        .with_panel(
            _series(
                "Jobs submitted by outcome",
                "POST /jobs per second: enqueued, duplicate (a retried POST), conflict, invalid, draining, "
                "redis_unavailable.",
                "ops",
                _query(f"sum by (queue, outcome) ({submitted})", "{{queue}} {{outcome}}"),
            )
        )
        .with_panel(
            _series(
                "Web pods ready",
                "Web pods scraped, and those whose readiness passes (not draining, Redis answers).",
                "short",
                _query(f"sum({contract.METRIC_WEB_READY}{_sel(w)})", "ready"),
                _query(f"count(up{_sel(w)} == 1)", "scraped"),
            )
        )
    )


def dashboard_json(spec: WorkloadSpec, selectors: Selectors, scope: str) -> str:
    return json.dumps(build_dashboard(spec, selectors, scope), indent=2, sort_keys=True) + "\n"
