"""The worker fixtures (a password-protected real redis-server, real `killsafe-worker` processes) for the
ECS-only worker behaviour: EMF metrics and task scale-in protection."""

from __future__ import annotations

from tests.worker.conftest import _no_password_in_any_log, redis_server, workers

__all__ = ["_no_password_in_any_log", "redis_server", "workers"]
