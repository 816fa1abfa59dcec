"""What the worker does only on ECS: EMF metrics (emf.py) and task scale-in protection (task_protection.py).

Both are switched on by the environment alone (KILLSAFE_EMF_NAMESPACE from the ECS target, ECS_AGENT_URI
from the ECS agent), run as tasks of their own beside the worker, and can neither stop nor delay it:
`around()` wraps the worker's run, starts them, and after the worker has drained writes the last EMF
line (the counts of the final minute, e.g. jobs interrupted at the drain deadline). Off ECS it only
awaits the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from killsafe_worker import contract

if TYPE_CHECKING:
    from killsafe_worker.emf import EmfPublisher
    from killsafe_worker.task_protection import TaskProtection
    from killsafe_worker.worker import WorkerRuntime

STOP_SECONDS = 0.5


class EcsIntegration:
    def __init__(self, emf: EmfPublisher | None, protection: TaskProtection | None) -> None:
        self.emf = emf
        self.protection = protection

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], runtime: WorkerRuntime) -> EcsIntegration:
        namespace = environ.get(contract.ENV_EMF_NAMESPACE, "").strip()
        agent = environ.get(contract.ENV_ECS_AGENT_URI, "").strip()
        emf = None
        if namespace:  # imported only on ECS: aws-embedded-metrics reads package metadata at import
            from killsafe_worker.emf import EmfPublisher

            emf = EmfPublisher(runtime.metrics, namespace)
        protection = None
        if agent:  # imported only on ECS: off ECS the worker never loads aiohttp (memory, start time)
            from killsafe_worker.task_protection import TaskProtection

            protection = TaskProtection(agent, lambda: bool(runtime.in_flight), runtime.settings.max_job_seconds)
        return cls(emf, protection)

    async def around(self, run: Awaitable[int]) -> int:
        """Await the worker's run with the ECS companions beside it; the worker's exit code."""
        companions: list[asyncio.Future[Any]] = []
        if self.emf is not None:
            companions.append(asyncio.ensure_future(self.emf.run()))
        if self.protection is not None:
            companions.append(asyncio.ensure_future(self.protection.run()))
        try:
            return await run
        finally:
            for task in companions:
                task.cancel()
            if companions:
                with contextlib.suppress(Exception):
                    await asyncio.wait(companions, timeout=STOP_SECONDS)
            if self.emf is not None:
                self.emf.flush(final=True)
