"""Shared fixtures: real services only (a real redis-server per test), and tools that are required in CI.

`require(tool)` fails the test when KILLSAFE_CI=1 (set by .ci/run, which installs every tool) and
skips it with a printed reason elsewhere, so a developer without root still gets a useful run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("KILLSAFE_CI") == "1"


def require(tool: str, why: str = "") -> str:
    """Path of `tool`; fail in CI, skip elsewhere, when it is not installed."""
    path = shutil.which(tool)
    if path:
        return path
    reason = f"{tool} is not installed{(' (' + why + ')') if why else ''}; .ci/run installs it"
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_root(why: str) -> None:
    if os.geteuid() == 0:
        return
    if IN_CI:
        pytest.fail(f"CI must run as root: {why}")
    pytest.skip(f"needs root: {why}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A real redis-server on 127.0.0.1 with AOF (everysec) and noeviction, like production."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require("redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
                "--save",
                "",
                "--logfile",
                str(self.workdir / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.cli("PING").strip() == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not answer PING within {timeout}s")

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [require("redis-cli"), "-p", str(self.port), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(timeout=10)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (SIGTERM, so AOF is flushed) and start again on the same port and data dir."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


def running(server: RedisServer) -> Iterator[RedisServer]:
    """Start `server`, yield it, kill it: the body of every Redis fixture."""
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running(RedisServer(tmp_path / "redis"))
