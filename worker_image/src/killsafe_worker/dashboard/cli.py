"""`killsafe-dashboard`: serve the dashboard (default), or print a credential line for a new user.

    killsafe-dashboard                                   # configured by environment (contract.ENV_DASHBOARD_*)
    killsafe-dashboard hash-password --user alice --role operator   # password from stdin or a prompt

Exit codes: 0 stopped cleanly; 1 cannot listen; 2 invalid configuration (one line names the variable).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence

from killsafe_worker import contract
from killsafe_worker.config import SettingsError
from killsafe_worker.logs import configure_logging

MIN_PASSWORD_CHARS = 12


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=contract.DASHBOARD_COMMAND,
        description="The killsafe job dashboard: failed jobs, audited retries, behind authentication.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{serve,hash-password}")
    commands.add_parser("serve", help="serve the dashboard (the default)")
    hashing = commands.add_parser(
        "hash-password", help="print a `name:role:hash` line for the credential file (reads the password from stdin)"
    )
    hashing.add_argument("--user", required=True, help="the user name (A-Z a-z 0-9 _ . @ + -)")
    hashing.add_argument("--role", required=True, choices=contract.DASHBOARD_ROLES)
    return parser


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def hash_password_line(user: str, role: str, password: str) -> str:
    from killsafe_worker.dashboard.auth import USER_NAME, hash_password, parse_credentials

    if not USER_NAME.match(user):
        raise ValueError(f"--user {user!r}: use 1-64 of A-Z a-z 0-9 _ . @ + -")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    line = f"{user}:{role}:{hash_password(password)}"
    parse_credentials(line, "the new line")  # what the dashboard will accept
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "hash-password":
        try:
            print(hash_password_line(args.user, args.role, _read_password()))
        except (ValueError, EOFError) as err:
            print(f"{contract.DASHBOARD_COMMAND}: {err}", file=sys.stderr)
            return contract.EXIT_USAGE
        return contract.EXIT_OK
    from killsafe_worker.dashboard.app import serve
    from killsafe_worker.dashboard.auth import authenticator_for
    from killsafe_worker.dashboard.settings import load_dashboard_settings

    try:
        settings = load_dashboard_settings(os.environ)
        configure_logging(settings.log_level)
        authenticator = authenticator_for(settings)  # a missing or invalid credential file stops us here
    except SettingsError as err:
        print(f"{contract.DASHBOARD_COMMAND}: {err}", file=sys.stderr)
        return contract.EXIT_USAGE
    return asyncio.run(serve(settings, authenticator))
