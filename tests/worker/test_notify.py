"""sd_notify over a real unix datagram socket: the notifier alone, and a real worker under a
NOTIFY_SOCKET (READY=1 once ready, WATCHDOG=1 from its supervision tick only while it is live).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from killsafe_worker import contract
from killsafe_worker.notify import SystemdNotifier
from tests.conftest import RedisServer
from tests.worker.conftest import WorkerFactory


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"killsafe-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(0.2)
    try:
        yield "@" + name, sock
    finally:
        sock.close()


def received(sock: socket.socket, seconds: float) -> list[str]:
    messages: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            messages.append(sock.recv(4096).decode())
    return messages


def test_notifier_sends_to_path_and_abstract_sockets(tmp_path: Path, abstract_socket):
    address, sock = abstract_socket
    assert SystemdNotifier({"NOTIFY_SOCKET": address}).notify("READY=1", "STATUS=up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        assert SystemdNotifier({"NOTIFY_SOCKET": str(path)}).notify("WATCHDOG=1")
        assert listener.recv(4096) == b"WATCHDOG=1"

    disabled = SystemdNotifier({})
    assert not disabled.enabled and not disabled.notify("READY=1")
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not gone.notify("READY=1")  # systemd gone: reported, never raised


def test_worker_notifies_ready_watchdog_and_stopping(
    redis_server: RedisServer, workers: WorkerFactory, abstract_socket
):
    address, sock = abstract_socket
    env = {"NOTIFY_SOCKET": address, contract.ENV_LOCK_DURATION_MS: "4000"}
    worker = workers.start(env=env, wait_ready=False)
    messages = received(sock, 0.1)
    deadline = time.monotonic() + 60
    while not any("WATCHDOG=1" in m for m in messages) and time.monotonic() < deadline:
        messages += received(sock, 0.5)
    assert messages[0].startswith("READY=1"), messages
    assert "WATCHDOG=1" in messages

    # A stalled event loop is not live: no WATCHDOG=1 while /livez reports it.
    worker.send(signal.SIGSTOP)
    time.sleep(3)
    worker.send(signal.SIGCONT)
    received(sock, 0.3)  # anything sent in the instant before the first post-stop tick
    assert worker.status(contract.LIVE_PATH) == 503
    assert "WATCHDOG=1" not in received(sock, 2.0)

    worker.send(signal.SIGTERM)
    assert worker.wait_exit(timeout=30) == contract.EXIT_OK
    assert "STOPPING=1" in received(sock, 0.5)
    assert os.environ.get("NOTIFY_SOCKET") != address
