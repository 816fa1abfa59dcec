"""The dashboard's web panels against a real Prometheus scraping a real `killsafe-web` (real redis-server).

The PromQL is the dashboard's own (`build_dashboard` with a web selector), with Grafana's variables
filled in: it must return the request rate by route template and status, and a 5xx ratio that moves
when Redis goes away (POST /jobs answers 503), and Prometheus must find the metrics port and never the
public one.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from killsafe import contract
from killsafe.observability.alerts import Selectors, matchers
from killsafe.observability.dashboard import build_dashboard
from tests.conftest import RedisServer, free_port, require
from tests.kubernetes.k8s_specs import make_spec
from tests.worker.test_web import QUEUE, start_web

SCRAPE_SECONDS = 1
RATE_WINDOW = "10s"
"""Stands in for Grafana's $__rate_interval: several 1 s scrapes."""


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[str, Any, RedisServer]]:
    prometheus_bin = require("prometheus", "apt prometheus")
    web = start_web(redis_server.url)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": f"{SCRAPE_SECONDS}s"},
                "scrape_configs": [
                    {"job_name": "killsafe-web", "static_configs": [{"targets": [f"127.0.0.1:{web.metrics_port}"]}]},
                    {"job_name": "public-port", "static_configs": [{"targets": [f"127.0.0.1:{web.port}"]}]},
                ],
            }
        )
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, 30, "prometheus ready")
        yield url, web, redis_server
    finally:
        proc.kill()
        proc.wait(timeout=10)
        web.stop()


def _web_panels() -> dict[str, list[str]]:
    board = build_dashboard(
        make_spec(worker={"queues": [QUEUE]}), Selectors(worker="", web=matchers(job="killsafe-web")), "test"
    )
    return {
        panel["title"]: [
            t["expr"].replace("$__rate_interval", RATE_WINDOW).replace("$queue", ".*") for t in panel["targets"]
        ]
        for panel in board["panels"]
        if panel["title"].startswith(("Web", "Jobs submitted")) and "targets" in panel
    }


def test_the_dashboards_web_queries_show_traffic_and_server_errors(
    prometheus: tuple[str, Any, RedisServer],
) -> None:
    url, web, redis_server = prometheus
    panels = _web_panels()
    assert set(panels) == {"Web requests", "Web 5xx ratio", "Jobs submitted by outcome", "Web pods ready"}
    _wait(lambda: _query(url, 'up{job="killsafe-web"} == 1'), 30, "the metrics port scraped")
    _wait(lambda: _query(url, 'up{job="public-port"} == 0'), 30, "the public port to fail its scrape")

    [rate] = panels["Web requests"]

    def posted() -> list[dict[str, Any]]:
        """A series is born at its first request (from a non-zero value rate() cannot see): keep posting."""
        for n in range(5):
            assert web.post({"name": "echo", "data": {"n": n}})[0] == 202
        query = _query(url, rate)
        return [s for s in query if s["metric"] == {"route": "/jobs", "status": "202"} and float(s["value"][1]) > 0]

    _wait(posted, 30, "a request rate of POST /jobs 202 above 0")
    [ratio] = panels["Web 5xx ratio"]
    assert _wait(lambda: _query(url, ratio), 30, "the 5xx ratio")[0]["value"][1] == "0"
    ready, scraped = panels["Web pods ready"]
    assert _query(url, ready)[0]["value"][1] == "1" and _query(url, scraped)[0]["value"][1] == "1"

    redis_server.stop()
    for n in range(5):
        assert web.post({"name": "echo", "data": {"n": n}})[0] == 503
    errors = _wait(lambda: [s for s in _query(url, ratio) if float(s["value"][1]) > 0], 30, "a 5xx ratio above 0")
    print(f"\n  web 5xx ratio after Redis went away: {float(errors[0]['value'][1]):.2f}")
    [outcomes] = panels["Jobs submitted by outcome"]
    by_outcome = _wait(
        lambda: {s["metric"]["outcome"]: float(s["value"][1]) for s in _query(url, outcomes)}.get("redis_unavailable"),
        30,
        "redis_unavailable submissions",
    )
    assert by_outcome > 0
    _wait(lambda: _query(url, f"{ready} == 0"), 30, "the ready gauge to drop")
    assert not _query(url, f'{{job="public-port",__name__=~"{contract.METRIC_WEB_REQUESTS}"}}')
