"""sd_notify(3) over the NOTIFY_SOCKET datagram socket, for systemd `Type=notify` and `WatchdogSec=`.

A dozen lines instead of a dependency: one datagram per state change. The caller (the supervision
loop on the event loop that also fetches jobs) decides when to send WATCHDOG=1, so the watchdog
proves that jobs are being consumed rather than that a side thread is alive. It pings every second,
so any WatchdogSec= of 2 s or more works without reading WATCHDOG_USEC.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify datagrams when NOTIFY_SOCKET is set; does nothing otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(NOTIFY_SOCKET_ENV, "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()  # abstract namespace socket
        elif raw.startswith("/"):
            self.address = raw
        self._socket: socket.socket | None = None
        if self.address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, *assignments: str) -> bool:
        """Send `READY=1`, `WATCHDOG=1`, `STATUS=...` etc. in one datagram; False if not sent."""
        if self._socket is None or self.address is None:
            return False
        try:
            self._socket.sendto("\n".join(assignments).encode(), self.address)
        except OSError as err:  # systemd gone or socket full: never let this break the worker
            log.warning("sd_notify failed", extra={"error": str(err)})
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
