"""Fargate task sizes: the valid task CPU/memory pairs, and the smallest one that fits the containers.

Fargate bills and schedules a task by a fixed (cpu, memory) pair from a table; anything else is
rejected by RegisterTaskDefinition. `fargate_task_size` picks the first pair, by CPU then memory,
that holds what the containers ask for. Because a pair's memory floor never falls as CPU grows, the
first fit is also the cheapest for any positive price per vCPU and per GiB (pulumi-awsx does the same).
8 and 16 vCPU need platform version 1.4.0, which is what the services ask for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PLATFORM_VERSION = "1.4.0"
"""Linux platform version every service runs on (8 and 16 vCPU, ephemeral storage need it)."""

CPU_UNITS_PER_VCPU = 1024


def _steps(first_gib: int, last_gib: int, step_gib: int) -> tuple[int, ...]:
    return tuple(gib * 1024 for gib in range(first_gib, last_gib + 1, step_gib))


FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: _steps(1, 4, 1),
    1024: _steps(2, 8, 1),
    2048: _steps(4, 16, 1),
    4096: _steps(8, 30, 1),
    8192: _steps(16, 60, 4),
    16384: _steps(32, 120, 8),
}
"""Task CPU units -> the memory values (MiB) Fargate accepts with it (Linux)."""

LARGEST_CPU = max(FARGATE_SIZES)
LARGEST_MEMORY = max(FARGATE_SIZES[LARGEST_CPU])


@dataclass(frozen=True)
class TaskSize:
    cpu: int
    """CPU units (1024 = 1 vCPU)."""
    memory: int
    """MiB."""

    def describe(self) -> str:
        return f"{self.cpu / CPU_UNITS_PER_VCPU:g} vCPU / {self.memory / 1024:g} GiB"


class NoFargateSize(ValueError):
    """No Fargate task size holds the requested CPU or memory."""


def cpu_units(millicores: int) -> int:
    """Millicores (the spec's unit, as on Kubernetes) as ECS CPU units, rounded up."""
    return math.ceil(millicores * CPU_UNITS_PER_VCPU / 1000)


def fargate_task_size(cpu: int, memory_mib: int) -> TaskSize:
    """The smallest valid Fargate size with at least `cpu` units and `memory_mib` MiB."""
    for task_cpu, memories in FARGATE_SIZES.items():
        if task_cpu < cpu:
            continue
        for memory in memories:
            if memory >= memory_mib:
                return TaskSize(task_cpu, memory)
    largest = TaskSize(LARGEST_CPU, LARGEST_MEMORY)
    if cpu > LARGEST_CPU:
        raise NoFargateSize(f"needs {cpu} CPU units; the largest Fargate task has {largest.describe()}")
    raise NoFargateSize(f"needs {memory_mib} MiB; the largest Fargate task has {largest.describe()}")


def is_valid_size(cpu: int, memory_mib: int) -> bool:
    return memory_mib in FARGATE_SIZES.get(cpu, ())
