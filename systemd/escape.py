"""Values made safe for systemd: every string from the spec passes through one of these filters.

systemd reads three kinds of text differently, so each has its own function:
- unit settings expand `%` specifiers (`%i`, `%h`): a literal `%` is written `%%`;
- command lines (ExecStart=...) also split words, unquote and expand `$VAR`: each argument is
  double-quoted with `\\` and `"` escaped and `$` written `$$`;
- environment files expand nothing but unquote shell-like: values are double-quoted with `\\`, `"`,
  `$` and backquotes escaped.
A newline or another control character can be held by none of them: they are refused (the spec
refuses them first, with the config path; these checks keep the templates safe on their own).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnsafeValue(ValueError):
    """A value no systemd file can hold as one line."""


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise UnsafeValue(f"{value!r} contains a newline or control character; systemd settings are one line")
    return value


def specifiers(value: object) -> str:
    """A unit setting's value, literal: `%` doubled so systemd expands no specifier."""
    return _one_line(str(value)).replace("%", "%%")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_argument(value: object) -> str:
    """One argument of ExecStart= and friends: quoted, `%` and `$` escaped."""
    return _quoted(specifiers(value).replace("$", "$$"))


def exec_command(argv: Iterable[str]) -> str:
    """A whole command line: an absolute executable then quoted arguments."""
    args = list(argv)
    if not args or not str(args[0]).startswith("/"):
        raise UnsafeValue(f"command {args!r} must start with an absolute path")
    first = specifiers(args[0])
    if re.search(r"[\s\"'\\$]", first):
        raise UnsafeValue(f"executable {args[0]!r} must be a plain path (no spaces, quotes, '\\' or '$')")
    return " ".join([first, *(exec_argument(a) for a in args[1:])])


def environment_assignment(name: str, value: object) -> str:
    """The value of an `Environment=` setting: `"NAME=value"` with specifiers escaped."""
    if not _ENV_NAME.match(name):
        raise UnsafeValue(f"{name!r} is not an environment variable name")
    return _quoted(f"{name}={specifiers(value)}")


def environment_file_line(name: str, value: object) -> str:
    """One `NAME="value"` line of an EnvironmentFile= (no specifier expansion happens there)."""
    if not _ENV_NAME.match(name):
        raise UnsafeValue(f"{name!r} is not an environment variable name")
    text = _one_line(str(value))
    for char in ("\\", '"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return f'{name}="{text}"'


def unit_list(names: Iterable[str]) -> str:
    """Space-separated unit names (After=, Wants=); names never hold spaces or `%` (spec-checked)."""
    return " ".join(specifiers(name) for name in names)
