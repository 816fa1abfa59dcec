"""The alerts end to end on 127.0.0.1: a real redis-server, two real `killsafe-worker` processes, the
Debian redis_exporter, real Prometheus and Alertmanager, and a webhook receiver.

The rule file is the emitter's own output (`rule_groups`) for a small spec, with seconds-long windows
passed as `AlertTiming` (scrape and evaluation every second). Each alert is provoked the way it happens
in production and its time to reach the webhook is printed next to its theoretical bound:

    FailedJobsHigh   jobs fail                   processing + scrape + evaluation + for + group_wait
    QueueStalled     slots busy, jobs wait       stall window + sampling + scrape + evaluation + for + group_wait
                                                 (counted from the last completion; never earlier than the window)
    RedisMemoryHigh  Redis filled past 50 %      scrape + evaluation + for + group_wait
    WorkerDown       every worker SIGKILLed      scrape + evaluation + for + group_wait
                     (QueueStalled resolves: its series go stale with the workers)

Bounds are asserted with a slack for a loaded 2-core machine (SLACK_SECONDS) and printed exactly.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from killsafe.observability.alerts import AlertTiming, Selectors, matchers
from killsafe.observability.prometheus import rule_groups
from tests.conftest import RedisServer, free_port, require
from tests.kubernetes.k8s_specs import make_spec
from tests.worker.conftest import QUEUE, WorkerFactory, client, enqueue_many

SCRAPE = 1
EVALUATION = 1
GROUP_WAIT = 1
SAMPLING = 1  # the workers sample queue counts about once a second
SLACK_SECONDS = 4.0
TIMING = AlertTiming(
    stalled_seconds=5,
    worker_down_seconds=3,
    dead_letter_growing_seconds=60,
    scrape_interval_seconds=SCRAPE,
    confirm_seconds=2,
    event_window_seconds=30,
    dead_letter_step_seconds=15,
    oom_window_seconds=30,
    redis_memory_seconds=2,
)
SPEC = make_spec(
    worker={"queues": [QUEUE], "replicas": 2, "max_job_seconds": 120},
    alerts={"failed_jobs_per_hour": 3, "redis_memory_percent": 50},
)
SELECTORS = Selectors(worker=matchers(job="killsafe-worker"), redis=matchers(job="redis-exporter"))
REDIS_MAXMEMORY_MIB = 32


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every notification, with the time it arrived."""

    port: int = field(default_factory=free_port)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.events += [(time.time(), alert) for alert in body["alerts"]]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def first(self, status: str, alertname: str) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            return next(
                ((t, a) for t, a in self.events if a["status"] == status and a["labels"]["alertname"] == alertname),
                None,
            )

    def wait(self, status: str, alertname: str, timeout: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first(status, alertname)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {status} {alertname} within {timeout}s; received: {self.summary()}")

    def summary(self) -> list[str]:
        with self.lock:
            return [f"{t:.1f} {a['status']} {a['labels']['alertname']}" for t, a in self.events]


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Stack:
    prometheus: str
    webhook: Webhook
    redis: RedisServer
    workers: WorkerFactory

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _get(f"{self.prometheus}/api/v1/query?query={urllib.parse.quote(expr)}")["data"][
            "result"
        ]
        return result


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=out)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    prometheus_bin = require("prometheus", "apt prometheus")
    alertmanager_bin = require("prometheus-alertmanager", "apt prometheus-alertmanager")
    exporter_bin = require("prometheus-redis-exporter", "apt prometheus-redis-exporter")
    redis = RedisServer(tmp_path / "redis", extra=("--maxmemory", f"{REDIS_MAXMEMORY_MIB}mb"))
    redis.start()
    webhook = Webhook()
    hook_server = webhook.serve()
    processes: list[subprocess.Popen[bytes]] = []
    workers = WorkerFactory(redis, tmp_path)
    try:
        exporter_port, am_port, prom_port = free_port(), free_port(), free_port()
        processes.append(
            _start(
                [
                    exporter_bin,
                    f"-redis.addr=redis://127.0.0.1:{redis.port}",
                    f"-web.listen-address=127.0.0.1:{exporter_port}",
                    "-include-config-metrics",
                ],
                tmp_path / "exporter.log",
            )
        )
        (tmp_path / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname"],
                        "group_wait": f"{GROUP_WAIT}s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "hook",
                            "webhook_configs": [{"url": f"http://127.0.0.1:{webhook.port}/", "send_resolved": True}],
                        }
                    ],
                }
            )
        )
        processes.append(
            _start(
                [
                    alertmanager_bin,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
            )
        )
        started = [workers.start(wait_ready=False, env={"KILLSAFE_MAX_JOB_SECONDS": "120"}) for _ in range(2)]
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule_groups(SPEC, TIMING, SELECTORS), sort_keys=False))
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE}s",
                        "evaluation_interval": f"{EVALUATION}s",
                        "scrape_timeout": f"{SCRAPE}s",
                    },
                    "rule_files": ["rules.yml"],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                    "scrape_configs": [
                        {
                            "job_name": "killsafe-worker",
                            "static_configs": [{"targets": [f"127.0.0.1:{w.port}" for w in started]}],
                        },
                        {"job_name": "redis-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
                    ],
                }
            )
        )
        check = subprocess.run(
            [require("promtool"), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        processes.append(
            _start(
                [
                    prometheus_bin,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        for worker in started:
            worker.wait_ready()
        prometheus = f"http://127.0.0.1:{prom_port}"
        _wait(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{am_port}/-/ready", timeout=2).status == 200,
            30,
            "alertmanager ready",
        )
        _wait(lambda: urllib.request.urlopen(f"{prometheus}/-/ready", timeout=2).status == 200, 30, "prometheus ready")
        yield Stack(prometheus, webhook, redis, workers)
    finally:
        workers.cleanup()
        for proc in processes:
            proc.kill()
            proc.wait(timeout=10)
        hook_server.shutdown()
        redis.stop(kill=True)


def _report(name: str, measured: float, bound: float, how: str) -> None:
    within = "within" if measured <= bound else "OVER"
    print(f"\n  {name:<16} time to alert {measured:5.1f} s   bound {bound:5.1f} s ({how})   {within}")


def test_alerts_reach_the_webhook_within_their_bounds(stack: Stack) -> None:
    url = stack.redis.url
    r = client(url)
    stop = threading.Event()

    def produce() -> None:  # a steady trickle of quick jobs, so the workers complete work all along
        while not stop.is_set():
            enqueue_many(url, [("echo", {"n": 1}, {})])
            time.sleep(0.2)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    _wait(lambda: len(stack.query('up{job="killsafe-worker"} == 1')) == 2, 30, "both workers scraped")
    watched_since = time.time()

    # FailedJobsHigh: 5 failures in the window, above the threshold of 3.
    t0 = time.time()
    enqueue_many(url, [("fail", {"message": "boom"}, {}) for _ in range(5)])
    _wait(lambda: r.zcard(f"bull:{QUEUE}:failed") == 5, 30, "5 failed jobs")
    processing = time.time() - t0
    at, alert = stack.webhook.wait("firing", "FailedJobsHigh", 60)
    bound = processing + SCRAPE + EVALUATION + TIMING.confirm_seconds + GROUP_WAIT
    _report("FailedJobsHigh", at - t0, bound, f"processing {processing:.1f} + scrape + eval + for 2 + group_wait")
    assert at - t0 <= bound + SLACK_SECONDS
    assert alert["labels"]["queue"] == QUEUE and alert["labels"]["severity"] == "warning"
    assert "dlq list --queue jobs" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook"].startswith("FailedJobsHigh.md")

    # QueueStalled needs the queue watched for the whole window first (a fresh worker waits it out).
    time.sleep(max(0.0, watched_since + TIMING.stalled_seconds + TIMING.presence_window_seconds - time.time()))
    stop.set()
    producer.join(timeout=10)
    enqueue_many(url, [("sleep", {"seconds": 60}, {}) for _ in range(2)] + [("echo", {}, {}) for _ in range(3)])
    _wait(lambda: r.llen(f"bull:{QUEUE}:active") == 2, 30, "both workers busy with a long job")
    [(_, last_ms)] = r.zrange(f"bull:{QUEUE}:completed", -1, -1, withscores=True)
    last_completion = last_ms / 1000

    # RedisMemoryHigh at the same time (independent): fill Redis past 50 % of maxmemory.
    t_fill = time.time()
    for chunk in range(REDIS_MAXMEMORY_MIB * 6 // 10):  # 1 MiB values: a huge one would count twice (query buffer)
        r.set(f"filler:{chunk}", b"x" * 1024 * 1024)

    at, alert = stack.webhook.wait("firing", "QueueStalled", 60)
    bound = TIMING.stalled_seconds + SAMPLING + SCRAPE + EVALUATION + TIMING.confirm_seconds + GROUP_WAIT
    _report("QueueStalled", at - last_completion, bound, "stall 5 + sampling + scrape + eval + for 2 + group_wait")
    assert TIMING.stalled_seconds <= at - last_completion <= bound + SLACK_SECONDS
    assert alert["labels"]["queue"] == QUEUE and alert["labels"]["severity"] == "critical"

    at, alert = stack.webhook.wait("firing", "RedisMemoryHigh", 60)
    bound = SCRAPE + EVALUATION + TIMING.redis_memory_seconds + GROUP_WAIT
    _report("RedisMemoryHigh", at - t_fill, bound, "scrape + eval + for 2 + group_wait")
    assert at - t_fill <= bound + SLACK_SECONDS
    assert stack.webhook.first("firing", "RedisEvictionPolicyUnsafe") is None  # noeviction: silent

    # WorkerDown: every worker killed. QueueStalled resolves (stale series); WorkerDown must fire.
    t_kill = time.time()
    for worker in stack.workers.started:
        worker.proc.kill()
    at, alert = stack.webhook.wait("firing", "WorkerDown", 60)
    bound = SCRAPE + EVALUATION + TIMING.worker_down_seconds + GROUP_WAIT
    _report("WorkerDown", at - t_kill, bound, "scrape + eval + for 3 + group_wait")
    assert at - t_kill <= bound + SLACK_SECONDS
    assert alert["labels"] == {"alertname": "WorkerDown", "severity": "critical", "workload": SPEC.name}
    resolved, _ = stack.webhook.wait("resolved", "QueueStalled", 30)
    print(f"  QueueStalled resolved {resolved - t_kill:.1f} s after the kill (its series went stale)")
