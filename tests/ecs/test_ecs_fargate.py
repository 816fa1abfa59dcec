"""The Fargate size helper against the whole valid table (Linux, 0.25 to 16 vCPU), written from AWS's docs."""

from __future__ import annotations

import itertools

import pytest

from killsafe.ecs.fargate import FARGATE_SIZES, NoFargateSize, TaskSize, cpu_units, fargate_task_size, is_valid_size

GIB = 1024
# AWS: "Task CPU and memory" for Fargate, Linux containers
DOCUMENTED: dict[int, list[int]] = {
    256: [512, 1 * GIB, 2 * GIB],
    512: [g * GIB for g in range(1, 4 + 1)],
    1024: [g * GIB for g in range(2, 8 + 1)],
    2048: [g * GIB for g in range(4, 16 + 1)],
    4096: [g * GIB for g in range(8, 30 + 1)],
    8192: [g * GIB for g in range(16, 60 + 1, 4)],
    16384: [g * GIB for g in range(32, 120 + 1, 8)],
}
VALID = [TaskSize(cpu, memory) for cpu, memories in DOCUMENTED.items() for memory in memories]
VCPU_HOUR, GIB_HOUR = 0.04048, 0.004445
"""us-east-1 Linux/x86 on-demand prices: only their positivity and ratio matter for 'cheapest'."""


def price(size: TaskSize) -> float:
    return size.cpu / 1024 * VCPU_HOUR + size.memory / GIB * GIB_HOUR


def test_the_table_is_the_documented_one() -> None:
    assert {cpu: list(memories) for cpu, memories in FARGATE_SIZES.items()} == DOCUMENTED
    assert len(VALID) == 3 + 4 + 7 + 13 + 23 + 12 + 12


@pytest.mark.parametrize("size", VALID, ids=lambda s: f"{s.cpu}-{s.memory}")
def test_every_valid_size_is_its_own_fit(size: TaskSize) -> None:
    assert fargate_task_size(size.cpu, size.memory) == size
    assert is_valid_size(size.cpu, size.memory)


def test_every_request_gets_the_cheapest_valid_size_that_holds_it() -> None:
    cpus = sorted({1, *range(64, 16384 + 1, 64), *(s.cpu + d for s in VALID for d in (-1, 1) if s.cpu + d <= 16384)})
    memories = sorted(
        {1, *range(128, 122880 + 1, 128), *(s.memory + d for s in VALID for d in (-1, 1) if s.memory + d <= 122880)}
    )
    checked = 0
    for cpu, memory in itertools.product(cpus, memories):
        fits = [s for s in VALID if s.cpu >= cpu and s.memory >= memory]
        if not fits:
            with pytest.raises(NoFargateSize):
                fargate_task_size(cpu, memory)
            continue
        got = fargate_task_size(cpu, memory)
        assert got in fits
        assert price(got) == min(price(s) for s in fits), (cpu, memory, got)
        checked += 1
    assert checked > 100_000


def test_8_and_16_vcpu() -> None:
    assert fargate_task_size(cpu_units(5000), 8 * GIB) == TaskSize(8192, 16 * GIB)
    assert fargate_task_size(4096, 31 * GIB) == TaskSize(8192, 32 * GIB)
    assert fargate_task_size(8192, 61 * GIB) == TaskSize(16384, 64 * GIB)
    assert fargate_task_size(cpu_units(16_000), 1) == TaskSize(16384, 32 * GIB)
    assert fargate_task_size(1, 120 * GIB) == TaskSize(16384, 120 * GIB)


def test_what_fits_nothing_says_why() -> None:
    with pytest.raises(NoFargateSize, match=r"^needs 122881 MiB; the largest Fargate task has 16 vCPU / 120 GiB$"):
        fargate_task_size(256, 120 * GIB + 1)
    with pytest.raises(NoFargateSize, match=r"^needs 16385 CPU units; the largest Fargate task has 16 vCPU / 120 GiB$"):
        fargate_task_size(16385, 512)


@pytest.mark.parametrize(("millicores", "units"), [(10, 11), (250, 256), (500, 512), (1000, 1024), (15_625, 16_000)])
def test_millicores_become_cpu_units_rounded_up(millicores: int, units: int) -> None:
    assert cpu_units(millicores) == units
