"""The systemd target's Prometheus rules and Grafana dashboard: the shared definitions, VM selectors.

- `promtool check rules` on the rendered `prometheus/rules.yml` of `killsafe render --stack vm`;
- `promtool test rules` on that file (annotations dropped, as in tests/observability): WorkerRestarting
  fires from node_exporter's systemd-collector series of the worker units only, and the worker
  alerts fire from series labelled the way the rendered scrape config labels them;
- a real Prometheus with the rendered scrape job and rules and a real worker: WorkerDown goes pending;
- the rules and dashboard are exactly the shared emitters' output (no second copy of an expression).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from killsafe.config import load_stack, parse_stack_config
from killsafe.kubernetes.monitoring import dashboard_config_map
from killsafe.observability.dashboard import dashboard_json
from killsafe.observability.prometheus import rule_groups
from killsafe.spec import WorkloadSpec
from killsafe.systemd import observability
from tests.conftest import REPO, RedisServer, free_port, require
from tests.observability.rules_spec import without_annotations
from tests.worker.conftest import WorkerFactory, wait_for

KILLSAFE = REPO / ".venv/bin/killsafe"

UNIT_TESTS: dict[str, Any] = {
    "rule_files": ["rules.yml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "name": "a worker unit restarted 4 times in the hour fires; the web unit's restarts never count",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'node_systemd_service_restart_total{job="emails-node",instance="vm-1:9100",'
                    'name="emails-worker@8081.service"}',
                    "values": "0+1x10",
                },
                {
                    "series": 'node_systemd_service_restart_total{job="emails-node",instance="vm-1:9100",'
                    'name="emails-web.service"}',
                    "values": "0+5x10",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "WorkerRestarting", "exp_alerts": []},
                {
                    "eval_time": "8m",
                    "alertname": "WorkerRestarting",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "workload": "emails",
                                "instance": "vm-1:9100",
                                "name": "emails-worker@8081.service",
                            }
                        }
                    ],
                },
            ],
        },
        {
            "name": "failed attempts scraped from the worker job fire FailedJobsHigh (threshold 50 in the vm stack)",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'killsafe_jobs_failed_total{job="emails-worker",instance="vm-1:8080",queue="emails",'
                    'workload="emails",component="worker"}',
                    "values": "0+2x40",
                },
                {
                    "series": 'killsafe_jobs_failed_total{job="other-worker",instance="vm-1:9080",queue="emails"}',
                    "values": "0+9x40",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "FailedJobsHigh", "exp_alerts": []},
                {
                    "eval_time": "35m",
                    "alertname": "FailedJobsHigh",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "workload": "emails", "queue": "emails"}}],
                },
            ],
        },
        {
            "name": "every worker instance gone: WorkerDown fires after worker_down_minutes",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'killsafe_worker_ready{job="emails-worker",instance="vm-1:8080"}',
                    "values": "1x5 stale",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "WorkerDown",
                    "exp_alerts": [{"exp_labels": {"severity": "critical", "workload": "emails"}}],
                },
            ],
        },
    ],
}


def vm() -> WorkloadSpec:
    return load_stack("vm", REPO / "stacks").workload


def render_vm(out: Path) -> Path:
    result = subprocess.run(
        [str(KILLSAFE), "render", "--stack", "vm", "--out", str(out)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return out / "systemd"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool", "apt prometheus"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_rendered_rules_pass_promtool_check_rules(tmp_path: Path) -> None:
    folder = render_vm(tmp_path)
    result = promtool("check", "rules", "prometheus/rules.yml", cwd=folder)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_rendered_rules_fire_from_vm_series_in_promtool_unit_tests(tmp_path: Path) -> None:
    folder = render_vm(tmp_path)
    groups = yaml.safe_load((folder / "prometheus/rules.yml").read_text())
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(without_annotations(groups), sort_keys=False))
    (tmp_path / "vm.test.yml").write_text(yaml.safe_dump(UNIT_TESTS, sort_keys=False))
    result = promtool("test", "rules", "vm.test.yml", cwd=tmp_path)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_the_shared_emitter_with_vm_selectors_and_what_a_vm_lacks_left_out() -> None:
    spec = vm()
    rules = observability.rules(spec)
    assert rules == rule_groups(spec, observability.timing(spec), observability.selectors(spec))
    names = [rule["alert"] for rule in rules["groups"][0]["rules"]]
    assert names == [
        "QueueStalled",
        "WorkerDown",
        "FailedJobsHigh",
        "DeadLetterGrowing",
        "JobsInterrupted",
        "JobsTimedOut",
        "WorkerRestarting",
    ]
    for rule in rules["groups"][0]["rules"]:
        assert "namespace=" not in rule["expr"] and "kube_" not in rule["expr"], rule["expr"]


def test_without_node_exporter_no_restart_alert_and_no_node_job() -> None:
    raw = yaml.safe_load((REPO / "stacks/Pulumi.vm.yaml").read_text())["config"]
    config = {key.split(":", 1)[1]: value for key, value in raw.items()}
    config["workload"]["systemd"].pop("node_exporter_port")
    spec = parse_stack_config(config, "stacks/Pulumi.vm.yaml").workload
    assert "WorkerRestarting" not in [r["alert"] for r in observability.rules(spec)["groups"][0]["rules"]]
    assert [job["job_name"] for job in observability.scrape_configs(spec)["scrape_configs"]] == [
        "emails-worker",
        "emails-web",
    ]


def test_scrape_configs_cover_every_instance_and_node_exporter() -> None:
    jobs = {job["job_name"]: job for job in observability.scrape_configs(vm())["scrape_configs"]}
    worker = jobs["emails-worker"]["static_configs"][0]["targets"]
    assert worker == ["localhost:8080", "localhost:8081", "localhost:8082"]
    assert jobs["emails-node"]["static_configs"][0]["targets"] == ["localhost:9100"]
    assert jobs["emails-web"]["static_configs"][0]["targets"] == ["localhost:8001"], "the web's metrics port"


def test_dashboard_json_is_the_shared_dashboard_over_the_vm_jobs(tmp_path: Path) -> None:
    spec = vm()
    folder = render_vm(tmp_path)
    text = (folder / "grafana/dashboard.json").read_text()
    assert text == dashboard_json(spec, observability.selectors(spec), observability.DASHBOARD_SCOPE)
    board = json.loads(text)
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    assert exprs and all("namespace=" not in e and "kube_" not in e for e in exprs)
    assert any('node_systemd_service_restart_total{job="emails-node"' in e for e in exprs)
    # The Kubernetes ConfigMap's panels (restarts from node_exporter, not kube-state-metrics; no Redis exporter).
    k8s_map = dashboard_config_map(load_stack("dev", REPO / "stacks").workload)
    k8s = json.loads(next(iter(k8s_map["data"].values())))
    titles = [panel["title"] for panel in board["panels"]]
    assert titles == [panel["title"] for panel in k8s["panels"] if panel["title"] != "Redis memory"]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_real_prometheus_with_the_rendered_files_alerts_from_a_real_worker(tmp_path: Path) -> None:
    """The rendered scrape job (targets pointed at a real worker on 127.0.0.1, scraped every second) and
    the rendered rules, unchanged, in a real Prometheus: the worker's series carry the job the rules
    select, and with 1 of the vm stack's 3 workers ready WorkerDown goes pending at value 1 (`for` is 5 m)."""
    prometheus_bin = require("prometheus", "apt prometheus")
    folder = render_vm(tmp_path / "out")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    workers = WorkerFactory(redis, tmp_path)
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        worker = workers.start()
        scrape = yaml.safe_load((folder / "prometheus/scrape-configs.yml").read_text())
        [job] = [j for j in scrape["scrape_configs"] if j["job_name"] == "emails-worker"]
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{worker.port}"]
        job["scrape_interval"] = "1s"
        shutil.copy(folder / "prometheus/rules.yml", tmp_path / "rules.yml")
        config = {"global": {"evaluation_interval": "1s"}, "rule_files": ["rules.yml"], "scrape_configs": [job]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            prometheus = subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=log,
            )
        api = f"http://127.0.0.1:{port}/api/v1"
        started = time.monotonic()

        def worker_down() -> dict[str, Any] | None:
            try:
                groups = _get_json(f"{api}/rules?type=alert")["data"]["groups"]
            except OSError:
                return None
            rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
            down = rules.get("WorkerDown")
            if down is None or down["state"] != "pending":
                return None
            # Its value is the ready count: 1 once the real worker's series is scraped (0 before, via vector(0)).
            return down if float(down["alerts"][0]["value"]) == 1 else None

        down = wait_for(worker_down, 60, "WorkerDown pending with the real worker's ready count")
        print(f"\n  real Prometheus: WorkerDown pending (1 of 3 ready) {time.monotonic() - started:.2f} s after start")
        assert down["alerts"][0]["labels"] == {"alertname": "WorkerDown", "severity": "critical", "workload": "emails"}
        query = urllib.parse.quote('killsafe_worker_ready{job="emails-worker"}')
        [series] = _get_json(f"{api}/query?query={query}")["data"]["result"]
        assert series["metric"]["workload"] == "emails" and series["value"][1] == "1"
    finally:
        if prometheus is not None:
            prometheus.kill()
            prometheus.wait(timeout=10)
        workers.cleanup()
        redis.stop(kill=True)
