"""Stop signals caught from the first moment of the process, before anything slow is imported.

As PID 1 (a container whose `command:` replaced the image's init) a signal with no handler is simply
dropped by the kernel, so a SIGTERM that arrives while bullmq and redis-py are still importing
(~150 ms) would be lost and the process would run on until SIGKILL. `catch_early()` is the first
thing the entry points do; the worker's event loop takes over later and honours whatever arrived.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def catch_early() -> None:
    """Record SIGTERM/SIGINT instead of dying (or, as PID 1, ignoring them) until the loop handles them."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _remember)


def received_early() -> int | None:
    """The first stop signal caught before the event loop installed its own handlers, if any."""
    return _received[0] if _received else None
