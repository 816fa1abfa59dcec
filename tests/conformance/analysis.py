"""What the end state and the execution ledger say: lost jobs, duplicates, interruptions, recovery."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Execution:
    job: str
    attempt: int
    pid: int
    started: float
    ended: float | None
    outcome: str | None


def read_ledger(directory: Path) -> list[Execution]:
    """Pair every start with its end (same pid, job, attempt); a start with no end was cut short."""
    executions: list[Execution] = []
    for path in sorted(directory.glob("*.jsonl")):
        open_runs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        done: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key = (entry["job"], entry["attempt"])
            if entry["ev"] == "start":
                open_runs[key].append(entry)
            elif open_runs[key]:
                done.append((open_runs[key].pop(0), entry))
        done += [(start, None) for runs in open_runs.values() for start in runs]
        for start, end in done:
            executions.append(
                Execution(
                    start["job"],
                    start["attempt"],
                    start["pid"],
                    start["t"],
                    end["t"] if end else None,
                    end.get("outcome") if end else None,
                )
            )
    return sorted(executions, key=lambda e: e.started)


def duplicate_executions(executions: list[Execution]) -> int:
    """Runs of the same attempt beyond the first (a stall re-run keeps the attempt number)."""
    runs = Counter((e.job, e.attempt) for e in executions)
    return sum(count - 1 for count in runs.values())


@dataclass
class Casualties:
    """Jobs in flight on a worker when the suite killed or froze it, and how long until they re-ran."""

    by_event: Counter[str] = field(default_factory=Counter)
    recovery_seconds: list[float] = field(default_factory=list)
    never_rerun: list[str] = field(default_factory=list)
    """In flight at a kill and never started again (fine only if it had already completed)."""


def casualties(executions: list[Execution], events: list[tuple[str, int, float]]) -> Casualties:
    """`events`: (kind, pid, time) of each SIGKILL, OOM kill and SIGSTOP. A job is a casualty when its
    run on that pid started before the event and had not ended by then; its recovery is the time from
    the event to the next start of the same job on another process."""
    result = Casualties()
    for kind, pid, at in events:
        for run in executions:
            if run.pid != pid or run.started > at or (run.ended is not None and run.ended <= at):
                continue
            result.by_event[kind] += 1
            rerun = next((e for e in executions if e.job == run.job and e.pid != pid and e.started >= at), None)
            if rerun is None:
                if kind != "sigstop":  # a frozen worker may finish the job itself once thawed
                    result.never_rerun.append(f"{run.job} ({kind})")
            else:
                result.recovery_seconds.append(rerun.started - at)
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if q >= 100:
        return max(values)
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


HANDED_BACK = ("job interrupted and handed back to the queue", "interrupted job could not be handed back")


def interrupted_from_logs(log_paths: list[Path], reasons: tuple[str, ...]) -> Counter[str]:
    """Interrupted jobs by reason from the workers' JSON logs: unlike the scraped counters, these survive
    a worker that counts a hand-back and exits before the next scrape."""
    found: Counter[str] = Counter()
    for path in log_paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            message = str(entry.get("msg", ""))
            if message.startswith(HANDED_BACK) or (
                message.startswith("job attempt failed") and entry.get("reason") in reasons
            ):
                found[str(entry.get("reason"))] += 1
            elif message == "job locks lost":
                found["lock_lost"] += len(entry.get("jobIds", []))
    return found
