"""`killsafe-dashboard` under systemd's `Type=notify`: READY=1 only once it listens, STOPPING=1 on SIGTERM.

A real dashboard process with NOTIFY_SOCKET pointing at a datagram socket this test reads, as systemd's
would be; the rendered `<name>-dashboard.service` relies on it (tests/systemd runs it under systemd).
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.dashboard.conftest import DashboardFactory


def test_ready_once_listening_and_stopping_on_sigterm(dashboards: DashboardFactory, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(60)
        dashboard = dashboards.start({"NOTIFY_SOCKET": str(path)}, wait=False)
        ready = notify.recv(4096).decode()
        assert ready.splitlines()[0] == "READY=1" and "STATUS=listening on port" in ready, ready
        # The moment READY=1 arrives, the port answers (what `systemctl start` returning promises).
        assert dashboard.get("/", user=None).status == 401
        dashboard.proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096).decode() == "STOPPING=1"
        assert dashboard.proc.wait(timeout=30) == 0
