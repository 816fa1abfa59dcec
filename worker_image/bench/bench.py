"""Benchmark of the killsafe worker against the bare bullmq library and Node BullMQ, in one run.

Why one script and one run: this machine is noisy (2 shared cores), so numbers from different runs
cannot be compared. Every variant runs against the same private redis-server, rounds interleave
the variants (rotating their order), and the ratios come from medians measured side by side.

What it prints:
- no-op jobs/s of one worker process at each concurrency, for `killsafe-worker` (the real entry
  point), a bare `bullmq` Python worker and a Node BullMQ worker, with worker CPU and Redis calls
  per job (where the time goes);
- RSS of an idle killsafe worker after startup and after a run, its SIGTERM-to-exit time, and the
  delay before a second worker re-runs a job whose worker was SIGKILLed.

Method: FLUSHALL, pre-fill N jobs (outside the timed window), start the worker, and take the rate
between the first and the last completion from the `completed` sorted set (scored by finishedOn, so
the poller's resolution does not matter); poll-based timing is the fallback if jobs are removed.

Usage: .venv/bin/python worker_image/bench/bench.py [--jobs N] [--rounds R] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from bullmq import Queue

from killsafe_worker import contract

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"
BARE_WORKER = BENCH_DIR / "bare_worker.py"
KILLSAFE_WORKER = Path(sys.executable).with_name("killsafe-worker")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FILL_CHUNK = 1000
POLL_SECONDS = 0.02
"""Poller period: only decides when a run is over (the rate comes from finishedOn), so keep it cheap."""
BENCH_OWN_COMMANDS = frozenset({"llen", "info", "config|resetstat", "flushall"})
"""Commands the benchmark itself sends while a worker runs (left out of the per-job counts)."""
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro")
RSS_TARGET_MIB = 60.0
KILLSAFE_VS_BARE_TARGET = 0.90
KILLSAFE_VS_NODE_C1_TARGET = 0.5


def log(message: str) -> None:
    """Progress goes to stderr so `--json` output on stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; True if it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- Redis ----------------------------------------------------------------------------------------


class RedisServer:
    """A private, throwaway redis-server on a free loopback port (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        settings = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(workdir),
            "maxmemory-policy": "noeviction",
        }
        self.process = subprocess.Popen(
            ["redis-server", *(part for name, value in settings.items() for part in (f"--{name}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        if not wait_until(self._answers, timeout=10):
            self.stop()
            raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the last CONFIG RESETSTAT (e.g. {'evalsha': 40000, ...})."""
        stats = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _fill(url: str, queue_name: str, jobs: int, job_name: str, data: dict[str, Any]) -> None:
    queue = Queue(queue_name, {"connection": url})
    try:
        for start in range(0, jobs, FILL_CHUNK):
            count = min(FILL_CHUNK, jobs - start)
            await queue.addBulk([{"name": job_name, "data": data} for _ in range(count)])
    finally:
        await queue.close()


def fill(url: str, queue_name: str, jobs: int, job_name: str, data: dict[str, Any]) -> None:
    """Pre-fill the queue with the library's addBulk (never inside a timed window)."""
    asyncio.run(_fill(url, queue_name, jobs, job_name, data))


def queue_key(queue_name: str, suffix: str) -> str:
    return f"bull:{queue_name}:{suffix}"


def finished_on_window_ms(client: redis.Redis, completed_key: str) -> float:
    """Milliseconds from the first to the last completion: the completed set is scored by finishedOn."""
    first: Any = client.zrange(completed_key, 0, 0, withscores=True)
    last: Any = client.zrange(completed_key, -1, -1, withscores=True)
    if not first or not last:
        return 0.0
    return float(last[0][1]) - float(first[0][1])


# --- Worker processes -----------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A run that could not produce a number (worker crashed, stalled or failed jobs)."""


@dataclass(frozen=True)
class Launch:
    """How to start one worker process: argv plus extra environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_port: int | None = None


class WorkerProcess:
    """A started worker: its RSS and CPU from /proc, graceful and hard stops, its log."""

    def __init__(self, launch: Launch, log_path: Path) -> None:
        self.launch = launch
        self.log_path = log_path
        env = {**os.environ, **launch.env}
        with log_path.open("ab") as log_file:
            try:
                self.process = subprocess.Popen(
                    launch.argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                raise BenchError(f"cannot start {launch.argv[0]}: {err}") from err
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mib(self) -> float:
        """Resident set size now (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far (all threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def ready(self) -> bool:
        """killsafe: its readiness endpoint answers 200; the baselines: they printed "ready"."""
        if self.launch.health_port is None:
            try:
                return "ready" in self.log_path.read_text(errors="replace").split()
            except OSError:
                return False
        url = f"http://127.0.0.1:{self.launch.health_port}{contract.READY_PATH}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def terminate(self, timeout: float = 60) -> tuple[float, int]:
        """SIGTERM and wait; (seconds from signal to exit, exit code). SIGKILL after `timeout`."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return time.monotonic() - sent, code

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class Variant:
    """One kind of worker under test; `launch` builds its command for (redis url, queue, concurrency)."""

    key: str
    label: str
    launch: Callable[[str, str, int], Launch]


def killsafe_launch(extra_env: dict[str, str]) -> Callable[[str, str, int], Launch]:
    """The real `killsafe-worker` entry point, configured only through its environment contract."""

    def launch(url: str, queue_name: str, concurrency: int) -> Launch:
        port = free_port()
        env = {
            contract.ENV_REDIS_URL: url,
            contract.ENV_QUEUES: queue_name,
            contract.ENV_CONCURRENCY_PER_QUEUE: str(concurrency),
            contract.ENV_HEALTH_PORT: str(port),
            **extra_env,
        }
        return Launch([str(KILLSAFE_WORKER), "run"], env, health_port=port)

    return launch


def bare_launch(python: str, *flags: str) -> Callable[[str, str, int], Launch]:
    """bare_worker.py under `python`, with its optional flags (--uvloop, --fetch-next)."""

    def launch(url: str, queue_name: str, concurrency: int) -> Launch:
        return Launch([python, str(BARE_WORKER), url, queue_name, str(concurrency), *flags])

    return launch


def node_launch(node: str) -> Callable[[str, str, int], Launch]:
    def launch(url: str, queue_name: str, concurrency: int) -> Launch:
        return Launch([node, str(NODE_DIR / "worker.mjs"), url, queue_name, str(concurrency)])

    return launch


def ensure_node_modules(npm: str) -> None:
    """`npm ci` from the committed lock when node_modules is missing or older than the lock."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    log("installing the Node baseline with `npm ci` (from package-lock.json) ...")
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        check=True,
        stdout=subprocess.DEVNULL,
    )


# --- Throughput -----------------------------------------------------------------------------------


@dataclass
class ThroughputSample:
    """One worker process draining one pre-filled queue."""

    variant: str
    concurrency: int
    round: int
    jobs: int
    jobs_per_second: float
    timing: str
    """'finishedOn' (completed set scores) or 'poll' (fallback when completed jobs are removed)."""
    failed: int
    worker_cpu_us_per_job: float
    redis_cpu_us_per_job: float
    redis_commands_per_job: float
    """Every command Redis ran, including those inside Lua scripts (Redis 7 counts both)."""
    redis_scripts_per_job: float
    """EVALSHA/EVAL/FCALL calls: round trips that run a BullMQ script."""
    redis_commands_by_name: dict[str, float]
    poll_jobs_per_second: float
    """The same rate timed by the poller, as a cross-check of the finishedOn timing."""
    rss_after_mib: float
    exit_seconds: float
    exit_code: int


def measure_throughput(
    server: RedisServer,
    variant: Variant,
    *,
    concurrency: int,
    jobs: int,
    job_name: str,
    round_index: int,
    workdir: Path,
    stall_timeout: float,
) -> ThroughputSample:
    """Fill `jobs` jobs, start one worker, time first to last completion, stop it with SIGTERM."""
    client = server.client
    queue_name = f"bench-{variant.key}-c{concurrency}-r{round_index}"
    client.flushall()
    fill(server.url, queue_name, jobs, job_name, {})
    wait_key, active_key, failed_key = (queue_key(queue_name, s) for s in ("wait", "active", "failed"))
    completed_key = queue_key(queue_name, "completed")
    client.config_resetstat()
    worker = WorkerProcess(variant.launch(server.url, queue_name, concurrency), workdir / f"{queue_name}.log")
    first_poll: tuple[float, int, float, float] | None = None
    last_change = time.monotonic()
    previous_done = 0
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            pipe.llen(wait_key)
            pipe.llen(active_key)
            waiting, active = pipe.execute()
            now = time.monotonic()
            done = jobs - int(waiting) - int(active)
            if done > 0 and first_poll is None:
                first_poll = (now, done, worker.cpu_seconds(), server.cpu_seconds())
            if done >= jobs:
                break
            if done != previous_done:
                previous_done, last_change = done, now
            elif now - last_change > stall_timeout:
                raise BenchError(f"{variant.label}: no progress for {stall_timeout:g}s at {done}/{jobs} jobs")
            if not worker.alive():
                raise BenchError(f"{variant.label} exited with {worker.process.returncode} at {done}/{jobs} jobs")
            time.sleep(POLL_SECONDS)
        end = (time.monotonic(), worker.cpu_seconds(), server.cpu_seconds())
        assert first_poll is not None
        calls = {name: count for name, count in server.command_calls().items() if name not in BENCH_OWN_COMMANDS}
        failed = int(client.zcard(failed_key))
        if failed:
            raise BenchError(f"{variant.label}: {failed} of {jobs} jobs failed (is job name {job_name!r} handled?)")
        poll_rate = (jobs - first_poll[1]) / max(end[0] - first_poll[0], 1e-6)
        window_ms = finished_on_window_ms(client, completed_key) if int(client.zcard(completed_key)) == jobs else 0.0
        if window_ms > 0:
            rate, timing = (jobs - 1) / (window_ms / 1000), "finishedOn"
        else:
            rate, timing = poll_rate, "poll"
        jobs_in_window = max(jobs - first_poll[1], 1)
        time.sleep(0.5)  # let the now idle worker settle before reading its memory
        rss_after = worker.rss_mib()
        exit_seconds, exit_code = worker.terminate()
    finally:
        worker.kill()
    return ThroughputSample(
        variant=variant.key,
        concurrency=concurrency,
        round=round_index,
        jobs=jobs,
        jobs_per_second=rate,
        timing=timing,
        poll_jobs_per_second=poll_rate,
        failed=failed,
        worker_cpu_us_per_job=(end[1] - first_poll[2]) / jobs_in_window * 1e6,
        redis_cpu_us_per_job=(end[2] - first_poll[3]) / jobs_in_window * 1e6,
        redis_commands_per_job=sum(calls.values()) / jobs,
        redis_scripts_per_job=sum(calls.get(name, 0) for name in SCRIPT_COMMANDS) / jobs,
        redis_commands_by_name={name: count / jobs for name, count in sorted(calls.items()) if count >= jobs / 100},
        rss_after_mib=rss_after,
        exit_seconds=exit_seconds,
        exit_code=exit_code,
    )


# --- Lifecycle: idle memory, SIGTERM, SIGKILL recovery --------------------------------------------


@dataclass
class IdleSample:
    """One idle worker: time to ready, memory, and how fast SIGTERM ends it."""

    variant: str
    ready_seconds: float
    rss_idle_mib: float
    sigterm_exit_seconds: float
    exit_code: int


def measure_idle(server: RedisServer, variant: Variant, workdir: Path, index: int, timeout: float) -> IdleSample:
    """Start an idle worker, wait until it is ready, read its RSS, then time SIGTERM to exit."""
    server.client.flushall()
    queue_name = f"bench-idle-{variant.key}-{index}"
    worker = WorkerProcess(variant.launch(server.url, queue_name, 1), workdir / f"{queue_name}.log")
    try:
        if not wait_until(worker.ready, timeout=timeout, interval=0.02):
            raise BenchError(f"{variant.label} not ready after {timeout:g}s:\n{worker.log_tail()}")
        ready_seconds = time.monotonic() - worker.started
        time.sleep(1.0)  # idle settle: background tasks (health server, probes, fetch loop) are running
        rss = worker.rss_mib()
        exit_seconds, exit_code = worker.terminate()
    finally:
        worker.kill()
    return IdleSample(variant.key, ready_seconds, rss, exit_seconds, exit_code)


@dataclass
class RecoverySample:
    """One SIGKILL: how long until another worker re-ran the job, and until it completed."""

    kill_to_rerun_seconds: float
    kill_to_complete_seconds: float
    attempts_started: int


def lock_holder_pid(client: redis.Redis, queue_name: str, job_id: str) -> int | None:
    """Pid of the killsafe worker holding the job's lock, from the token prefix in its registration."""
    token: Any = client.get(queue_key(queue_name, f"{job_id}:lock"))
    if not token:
        return None
    for key in client.scan_iter(match=f"{contract.WORKER_REGISTRY_PREFIX}*"):
        raw: Any = client.get(key)
        record = json.loads(raw) if raw else {}
        prefix = record.get("lockTokenPrefixes", {}).get(queue_name)
        if prefix and str(token).startswith(prefix):
            return int(record["pid"])
    return None


def measure_sigkill_recovery(
    server: RedisServer,
    variant: Variant,
    *,
    workdir: Path,
    index: int,
    sleep_job: str,
    sleep_data: dict[str, Any],
    timeout: float,
) -> RecoverySample:
    """Two ready workers; SIGKILL the one that took a sleep job, 1 s in; time the other's re-run."""
    client = server.client
    client.flushall()
    queue_name = f"bench-kill-{index}"
    workers: list[WorkerProcess] = []
    try:
        for name in ("a", "b"):
            log_path = workdir / f"{queue_name}-{name}.log"
            workers.append(WorkerProcess(variant.launch(server.url, queue_name, 1), log_path))
        for worker in workers:
            if not wait_until(worker.ready, timeout=timeout):
                raise BenchError(f"{variant.label} not ready:\n{worker.log_tail()}")
        fill(server.url, queue_name, 1, sleep_job, sleep_data)
        job_key = queue_key(queue_name, "1")
        if not wait_until(lambda: client.hget(job_key, "processedOn") is not None, timeout=timeout, interval=0.005):
            raise BenchError(f"no worker started the {sleep_job!r} job:\n{workers[0].log_tail()}")
        started = time.monotonic()
        first_processed_on = client.hget(job_key, "processedOn")
        holder = lock_holder_pid(client, queue_name, "1")
        victim = next((worker for worker in workers if worker.pid == holder), None)
        if victim is None:
            raise BenchError("cannot tell which worker holds the job's lock (no matching registration)")
        time.sleep(max(0.0, started + 1.0 - time.monotonic()))
        if client.hget(job_key, "finishedOn") is not None:
            raise BenchError(f"the {sleep_job!r} job finished before the kill: make it sleep longer")
        victim.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.process.wait()
        survivor = next(worker for worker in workers if worker is not victim)
        if not wait_until(
            lambda: client.hget(job_key, "processedOn") != first_processed_on, timeout=timeout, interval=0.005
        ):
            raise BenchError(f"no worker re-ran the job within {timeout:g}s:\n{survivor.log_tail()}")
        rerun = time.monotonic()
        if not wait_until(lambda: client.zscore(queue_key(queue_name, "completed"), "1") is not None, timeout=timeout):
            raise BenchError(f"the re-run did not complete within {timeout:g}s:\n{survivor.log_tail()}")
        completed = time.monotonic()
        attempts = int(client.hget(job_key, "ats") or 0)
    finally:
        for worker in workers:
            worker.kill()
    return RecoverySample(rerun - killed, completed - killed, attempts)


# --- Orchestration and report ---------------------------------------------------------------------


def summarize(samples: list[ThroughputSample], variants: list[Variant], levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        for variant in variants:
            mine = [s for s in samples if s.variant == variant.key and s.concurrency == level]
            if not mine:
                continue
            rates = [s.jobs_per_second for s in mine]
            rows.append(
                {
                    "variant": variant.key,
                    "label": variant.label,
                    "concurrency": level,
                    "jobs_per_second_median": statistics.median(rates),
                    "jobs_per_second_min": min(rates),
                    "jobs_per_second_max": max(rates),
                    "worker_cpu_us_per_job": statistics.median(s.worker_cpu_us_per_job for s in mine),
                    "redis_cpu_us_per_job": statistics.median(s.redis_cpu_us_per_job for s in mine),
                    "redis_commands_per_job": statistics.median(s.redis_commands_per_job for s in mine),
                    "redis_scripts_per_job": statistics.median(s.redis_scripts_per_job for s in mine),
                    "redis_commands_by_name": mine[0].redis_commands_by_name,
                    "timing": sorted({s.timing for s in mine}),
                    "rounds": len(mine),
                }
            )
    return rows


RATIOS: tuple[tuple[str, str, float | None, tuple[int, ...]], ...] = (
    ("killsafe", "bare", KILLSAFE_VS_BARE_TARGET, (1, 10, 50)),
    ("killsafe", "node", KILLSAFE_VS_NODE_C1_TARGET, (1,)),
    ("bare", "node", None, ()),
)
"""(variant, baseline, target, levels the target applies to). bare/node is context: the library's own ceiling."""


def ratios(rows: list[dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    """Throughput ratios of medians (what the targets are about) and CPU-per-job ratios (steadier under load)."""
    rate = {(r["variant"], r["concurrency"]): r["jobs_per_second_median"] for r in rows}
    cpu = {(r["variant"], r["concurrency"]): r["worker_cpu_us_per_job"] for r in rows}
    redis_cpu = {(r["variant"], r["concurrency"]): r["redis_cpu_us_per_job"] for r in rows}
    result = []
    for level in levels:
        for variant, baseline, target, target_levels in RATIOS:
            if (variant, level) not in rate or (baseline, level) not in rate:
                continue
            value = rate[(variant, level)] / rate[(baseline, level)]
            applies = target is not None and level in target_levels
            # Python vs Python: Redis runs the same scripts per job for both, so its CPU per job is a
            # probe of how fast the machine was during each run; dividing by it removes most noise.
            same_redis_work = "node" not in (variant, baseline)
            base_load = cpu[(baseline, level)] / redis_cpu[(baseline, level)]
            variant_load = cpu[(variant, level)] / redis_cpu[(variant, level)]
            result.append(
                {
                    "ratio": f"{variant}/{baseline}",
                    "variant": variant,
                    "baseline": baseline,
                    "concurrency": level,
                    "value": value,
                    "cpu_per_job_ratio": cpu[(baseline, level)] / cpu[(variant, level)],
                    "cpu_per_job_ratio_redis_normalized": base_load / variant_load if same_redis_work else None,
                    "target": target if applies else None,
                    "meets_target": (value >= target) if applies and target is not None else None,
                }
            )
    return result


def print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    print(
        f"\nkillsafe worker benchmark: {config['jobs']} no-op jobs x {config['rounds']} rounds, medians "
        f"(redis {report['versions']['redis']}, {report['versions']['cpus']} CPUs, took {report['seconds']:.0f}s; "
        f"python workers: hiredis {'on' if report['versions']['hiredis'] else 'off'}, "
        f"{'uvloop' if report['versions']['uvloop'] else 'stdlib loop'} unless labelled otherwise)"
    )
    print(
        f"{'conc.':>5}  {'worker':<32} {'jobs/s':>7} {'min-max':>11}  {'worker CPU':>10} {'redis CPU':>9} "
        f"{'scripts':>7} {'commands':>8}"
    )
    print(f"{'':>5}  {'':<32} {'median':>7} {'':>11}  {'us/job':>10} {'us/job':>9} {'/job':>7} {'/job':>8}")
    for row in report["throughput"]:
        spread = f"{row['jobs_per_second_min']:.0f}-{row['jobs_per_second_max']:.0f}"
        print(
            f"{row['concurrency']:>5}  {row['label']:<32} {row['jobs_per_second_median']:>7.0f} {spread:>11}  "
            f"{row['worker_cpu_us_per_job']:>10.0f} {row['redis_cpu_us_per_job']:>9.0f} "
            f"{row['redis_scripts_per_job']:>7.2f} {row['redis_commands_per_job']:>8.2f}"
        )
    print("(commands include those run inside Lua scripts; CPU is per job between first and last completion)")
    by_variant: dict[str, dict[str, float]] = {}
    for row in report["throughput"]:
        by_variant.setdefault(row["variant"], row["redis_commands_by_name"])
    for variant, commands in by_variant.items():
        print(f"  {variant} Redis commands per job: " + ", ".join(f"{n} {v:.2f}" for n, v in commands.items()))
    for ratio in report["ratios"]:
        verdict = ""
        if ratio["target"] is not None:
            verdict = f"  (target >= {ratio['target']:.2f}: {'ok' if ratio['meets_target'] else 'MISSED'})"
        print(
            f"{ratio['ratio']:>16} at concurrency {ratio['concurrency']:<3} {ratio['value']:.2f}{verdict:<26}"
            f"  CPU/job {ratio['baseline']}/{ratio['variant']} {ratio['cpu_per_job_ratio']:.2f}"
            + (
                f", normalized by Redis CPU/job {ratio['cpu_per_job_ratio_redis_normalized']:.2f}"
                if ratio["cpu_per_job_ratio_redis_normalized"] is not None
                else ""
            )
        )
    for idle in report.get("idle", []):
        verdict = ""
        if idle["variant"] == "killsafe":
            verdict = (
                f" (target < {RSS_TARGET_MIB:.0f}: {'ok' if idle['rss_idle_mib_max'] < RSS_TARGET_MIB else 'MISSED'})"
            )
        print(
            f"idle {idle['label']:<22} ready {idle['ready_seconds_median']:.2f}s after start, RSS "
            f"{idle['rss_idle_mib_median']:.1f} MiB{verdict}, SIGTERM to exit "
            f"{idle['sigterm_exit_seconds_median'] * 1000:.0f} ms (median of {idle['samples']}, "
            f"exit codes {idle['exit_codes']})"
        )
    after = report.get("rss_after_run_mib")
    if after:
        worst = max(after.values())
        print(
            "killsafe RSS idle after a run: "
            + ", ".join(f"c={level} {value:.1f} MiB" for level, value in after.items())
            + f"  (target < {RSS_TARGET_MIB:.0f} MiB: {'ok' if worst < RSS_TARGET_MIB else 'MISSED'})"
        )
    recovery = report.get("sigkill_recovery")
    if recovery:
        print(
            f"SIGKILL recovery (lock {recovery['lock_duration_ms']} ms, "
            f"stalled check {recovery['stalled_interval_ms']} ms, {recovery['sleep_seconds']:g}s job killed 1s in): "
            f"re-run {recovery['kill_to_rerun_seconds_median']:.2f}s "
            f"and completed {recovery['kill_to_complete_seconds_median']:.2f}s after the kill "
            f"(median of {recovery['samples']}, attempts started {recovery['attempts_started']})"
        )
    for error in report["errors"]:
        print(f"ERROR: {error}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run (default 20000; quick 2000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; medians are reported (default 3; quick 1)")
    parser.add_argument("--quick", action="store_true", help="small smoke run, under a minute")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--save", metavar="PATH", type=Path, help="also write the JSON report to PATH")
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated levels (default 1,10,50)")
    parser.add_argument(
        "--variants",
        default="killsafe,bare,node",
        help="which workers: killsafe, bare, node (the default), and the experiments bare-asyncio (stdlib "
        "event loop instead of uvloop) and bare-fetchnext (1 script call per job)",
    )
    parser.add_argument(
        "--other-python",
        metavar="PYTHON",
        help="also run the bare worker under this interpreter (another venv with bullmq, e.g. without hiredis)",
    )
    parser.add_argument("--job-name", default="echo", help="job name the killsafe worker handles as a no-op")
    parser.add_argument("--sleep-job", default="sleep", help="job name the killsafe worker handles by sleeping")
    parser.add_argument(
        "--sleep-data",
        default='{"seconds": 2}',
        help='data of the sleep job, JSON (default {"seconds": 2}); must last well over 1 s',
    )
    parser.add_argument("--idle-samples", type=int, default=None, help="idle start/SIGTERM cycles (default 5)")
    parser.add_argument("--kill-samples", type=int, default=None, help="SIGKILL recovery runs (default 3)")
    parser.add_argument("--skip-lifecycle", action="store_true", help="only throughput")
    parser.add_argument(
        "--stall-timeout", type=float, default=60, help="give up on a run after this many seconds without progress"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs or (2000 if quick else 20_000)
    args.rounds = args.rounds or (1 if quick else 3)
    args.idle_samples = args.idle_samples or (2 if quick else 5)
    args.idle_baselines = not quick
    args.kill_samples = args.kill_samples or (1 if quick else 3)
    return args


def build_variants(args: argparse.Namespace, errors: list[str]) -> list[Variant]:
    wanted = {name.strip() for name in args.variants.split(",") if name.strip()}
    variants = []
    if "killsafe" in wanted and not KILLSAFE_WORKER.exists():
        errors.append(f"{KILLSAFE_WORKER} not found: run with the project venv's python (.venv/bin/python)")
    elif "killsafe" in wanted:
        variants.append(Variant("killsafe", "killsafe-worker", killsafe_launch({})))
    if "bare" in wanted:
        variants.append(Variant("bare", "bare bullmq (python)", bare_launch(sys.executable)))
    if "bare-asyncio" in wanted:
        variants.append(
            Variant("bare-asyncio", "bare bullmq, stdlib loop", bare_launch(sys.executable, "--loop=asyncio"))
        )
    if "bare-fetchnext" in wanted:
        variants.append(
            Variant("bare-fetchnext", "bare bullmq +fetch-next", bare_launch(sys.executable, "--fetch-next"))
        )
    if args.other_python:
        variants.append(Variant("bare-other", f"bare bullmq ({args.other_python})", bare_launch(args.other_python)))
    if "node" in wanted:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            errors.append("node/npm not found: the Node BullMQ baseline was skipped")
        else:
            ensure_node_modules(npm)
            variants.append(Variant("node", "node BullMQ", node_launch(node)))
    return variants


def versions(server: RedisServer) -> dict[str, Any]:
    import bullmq

    node_bullmq = NODE_DIR / "node_modules" / "bullmq" / "package.json"
    return {
        "redis": server.version(),
        "python": platform.python_version(),
        "hiredis": importlib.util.find_spec("hiredis") is not None,
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "bullmq_python": bullmq.__version__,
        "bullmq_node": json.loads(node_bullmq.read_text())["version"] if node_bullmq.exists() else None,
        "cpus": os.cpu_count(),
    }


@contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="killsafe-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"worker logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    levels = [int(level) for level in args.concurrency.split(",")]
    errors: list[str] = []
    report: dict[str, Any] = {"config": {"jobs": args.jobs, "rounds": args.rounds, "concurrency": levels}}
    with work_directory(args.keep) as workdir:
        variants = build_variants(args, errors)
        server = RedisServer(workdir)
        try:
            report["versions"] = versions(server)
            samples: list[ThroughputSample] = []
            for round_index in range(args.rounds):
                shift = round_index % len(variants) if variants else 0
                order = variants[shift:] + variants[:shift]
                for level in levels:
                    for variant in order:
                        log(f"round {round_index + 1}/{args.rounds}  c={level:<3} {variant.label} ...")
                        try:
                            sample = measure_throughput(
                                server,
                                variant,
                                concurrency=level,
                                jobs=args.jobs,
                                job_name=args.job_name,
                                round_index=round_index,
                                workdir=workdir,
                                stall_timeout=args.stall_timeout,
                            )
                        except BenchError as err:
                            errors.append(str(err))
                            log(f"  failed: {err}")
                            continue
                        samples.append(sample)
                        if sample.exit_code != 0:
                            errors.append(f"{variant.label} exited with {sample.exit_code} after SIGTERM (c={level})")
                        log(f"  {sample.jobs_per_second:,.0f} jobs/s ({sample.worker_cpu_us_per_job:.0f} us CPU/job)")
            report["throughput"] = summarize(samples, variants, levels)
            report["ratios"] = ratios(report["throughput"], levels)
            report["samples"] = [asdict(s) for s in samples]
            killsafe_samples = [s for s in samples if s.variant == "killsafe"]
            report["rss_after_run_mib"] = {
                level: max(s.rss_after_mib for s in killsafe_samples if s.concurrency == level)
                for level in levels
                if any(s.concurrency == level for s in killsafe_samples)
            }
            if any(v.key == "killsafe" for v in variants) and not args.skip_lifecycle:
                lifecycle(server, variants, args=args, workdir=workdir, report=report, errors=errors)
        finally:
            server.stop()
    report["errors"] = errors
    report["seconds"] = time.monotonic() - began
    return report


def lifecycle(
    server: RedisServer,
    variants: list[Variant],
    *,
    args: argparse.Namespace,
    workdir: Path,
    report: dict[str, Any],
    errors: list[str],
) -> None:
    """Idle RSS and SIGTERM timing (interleaved across variants), then SIGKILL recovery with short locks."""
    idle_variants = [v for v in variants if v.key == "killsafe" or (args.idle_baselines and v.key in ("bare", "node"))]
    idle: list[IdleSample] = []
    for index in range(args.idle_samples):
        for variant in idle_variants:
            log(f"idle {variant.label} {index + 1}/{args.idle_samples}: startup RSS and SIGTERM ...")
            try:
                idle.append(measure_idle(server, variant, workdir, index, timeout=60))
            except BenchError as err:
                errors.append(str(err))
    report["idle"] = [
        {
            "variant": variant.key,
            "label": variant.label,
            "ready_seconds_median": statistics.median(s.ready_seconds for s in mine),
            "rss_idle_mib_median": statistics.median(s.rss_idle_mib for s in mine),
            "rss_idle_mib_max": max(s.rss_idle_mib for s in mine),
            "sigterm_exit_seconds_median": statistics.median(s.sigterm_exit_seconds for s in mine),
            "exit_codes": sorted({s.exit_code for s in mine}),
            "samples": len(mine),
        }
        for variant in idle_variants
        if (mine := [s for s in idle if s.variant == variant.key])
    ]
    lock_ms, stalled_ms = 2000, 1000
    short_locks = Variant(
        "killsafe",
        "killsafe-worker (short locks)",
        killsafe_launch(
            {contract.ENV_LOCK_DURATION_MS: str(lock_ms), contract.ENV_STALLED_INTERVAL_MS: str(stalled_ms)}
        ),
    )
    sleep_data = json.loads(args.sleep_data)
    recovery: list[RecoverySample] = []
    for index in range(args.kill_samples):
        log(f"SIGKILL recovery {index + 1}/{args.kill_samples} ...")
        try:
            recovery.append(
                measure_sigkill_recovery(
                    server,
                    short_locks,
                    workdir=workdir,
                    index=index,
                    sleep_job=args.sleep_job,
                    sleep_data=sleep_data,
                    timeout=60,
                )
            )
        except BenchError as err:
            errors.append(str(err))
            break
    if recovery:
        report["sigkill_recovery"] = {
            "lock_duration_ms": lock_ms,
            "stalled_interval_ms": stalled_ms,
            "sleep_seconds": float(next(iter(sleep_data.values()), 0)) if sleep_data else 0.0,
            "kill_to_rerun_seconds_median": statistics.median(s.kill_to_rerun_seconds for s in recovery),
            "kill_to_complete_seconds_median": statistics.median(s.kill_to_complete_seconds for s in recovery),
            "kill_to_rerun_seconds": [round(s.kill_to_rerun_seconds, 3) for s in recovery],
            "attempts_started": sorted({s.attempts_started for s in recovery}),
            "samples": len(recovery),
        }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.save:
        args.save.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
