"""The dashboard's retry budget: at most N jobs retried per minute, one job or a selection alike.

A retry puts load back on whatever made the jobs fail (a recovering SMTP server, a payment provider):
an operator who selects "everything" during an incident gets the budget's worth now and the rest a
minute later, never a thundering herd. One budget for the whole dashboard process (run one replica).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Final

WINDOW_SECONDS: Final = 60.0


class RetryBudget:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._spent: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._spent and now - self._spent[0] >= WINDOW_SECONDS:
            self._spent.popleft()

    def remaining(self, now: float | None = None) -> int:
        self._expire(time.monotonic() if now is None else now)
        return max(0, self.per_minute - len(self._spent))

    def seconds_until_available(self, now: float | None = None) -> float:
        current = time.monotonic() if now is None else now
        self._expire(current)
        if len(self._spent) < self.per_minute:
            return 0.0
        return WINDOW_SECONDS - (current - self._spent[0])

    def spend(self, jobs: int, now: float | None = None) -> None:
        current = time.monotonic() if now is None else now
        self._spent.extend([current] * jobs)
