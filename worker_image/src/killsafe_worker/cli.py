"""`killsafe-worker` command line: run the worker (default), probe its health, or manage dead letters.

`healthcheck` exists so container healthchecks (Docker HEALTHCHECK, ECS healthCheck) need neither
curl nor a shell in the image: it asks this worker's own health server on 127.0.0.1.

Running the worker, the first thing main() does is catch stop signals (stop_signals): as PID 1 a
SIGTERM that arrives before a handler exists is dropped, and importing the worker takes ~150 ms.
This module therefore imports only what main() needs before that.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from killsafe_worker import contract, stop_signals

PROBE_PATHS = {
    "live": (contract.LIVE_PATH,),
    "ready": (contract.READY_PATH,),
    "both": (contract.LIVE_PATH, contract.READY_PATH),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="killsafe-worker",
        description="BullMQ worker that drains on SIGTERM and survives SIGKILL (configured by environment).",
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,healthcheck,dlq}")
    commands.add_parser("run", help="run the worker (the default)")
    health = commands.add_parser("healthcheck", help="exit 0 if this host's worker is healthy, 1 otherwise")
    health.add_argument(
        "--probe",
        choices=sorted(PROBE_PATHS),
        default="both",
        help=f"endpoints that must answer 200: {contract.LIVE_PATH}, {contract.READY_PATH} or both (default)",
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds per request (default 3)")
    commands.add_parser("dlq", help="inspect and retry dead-lettered (failed) jobs; see `dlq --help`")
    return parser


def healthcheck(port: int, probe: str = "both", timeout: float = 3.0) -> int:
    """0 when every probed endpoint answers 200 within `timeout`, else 1 (with the reason on stderr)."""
    import urllib.error  # lazy: not on the worker's start-up path
    import urllib.request

    for path in PROBE_PATHS[probe]:
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (urllib.error.URLError, OSError) as err:
            print(f"healthcheck: {url}: {getattr(err, 'reason', err)}", file=sys.stderr)
            return 1
        if status != 200:
            print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; the generated wrapper passes the returned code to sys.exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in ([], ["run"]):
        stop_signals.catch_early()  # before anything slow; the worker's loop honours what arrives
    if args and args[0] == "dlq":
        from killsafe_worker import dlq  # lazy: the worker never needs it

        return int(dlq.main(args[1:]) or 0)
    parsed = _parser().parse_args(args)
    from killsafe_worker.config import SettingsError, env_int  # lazy: after the signals are caught

    try:
        if parsed.command == "healthcheck":
            port = env_int(os.environ, contract.ENV_HEALTH_PORT, contract.HEALTH_PORT, minimum=1, maximum=65_535)
            return healthcheck(port, parsed.probe, parsed.timeout)
        from killsafe_worker.worker import run_from_environment  # lazy: keeps healthcheck fast

        return run_from_environment(os.environ)
    except SettingsError as err:
        print(f"killsafe-worker: {err}", file=sys.stderr)
        return contract.EXIT_USAGE


def web_main() -> int:
    """`killsafe-web`: catch stop signals first, then import and run the web app (aiohttp takes a while)."""
    stop_signals.catch_early()
    from killsafe_worker import web

    return web.main()
