"""Reading units back (for `killsafe check` over rendered files, which may have been edited by hand).

systemd's syntax (systemd.syntax(7)): `[Section]` headers, `Key=value` lines, `#`/`;` comments, a
trailing backslash continues a line. A key may repeat (ExecStop=, Environment=); an empty assignment
resets the list, as systemd does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

UNIT_SUFFIXES = (".service", ".target", ".socket", ".timer", ".path", ".mount", ".slice")
RESETTABLE = frozenset(
    {
        "Environment",
        "EnvironmentFile",
        "ExecStart",
        "ExecStartPre",
        "ExecStartPost",
        "ExecStop",
        "ExecStopPost",
        "LoadCredential",
        "SystemCallFilter",
        "After",
        "Wants",
        "Requires",
        "OnFailure",
    }
)


@dataclass(frozen=True)
class Unit:
    """A parsed unit file: section -> key -> values in order."""

    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[str]:
        return list(self.sections.get(section, {}).get(key, []))

    def get(self, section: str, key: str) -> str | None:
        """The effective value of a single-valued setting (the last assignment wins)."""
        found = self.values(section, key)
        return found[-1] if found else None


@dataclass(frozen=True)
class SystemdFile:
    """One file of a rendered systemd folder, by its path under the folder (`units/x.service`)."""

    path: PurePosixPath
    text: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_unit(self) -> bool:
        return self.path.suffix in UNIT_SUFFIXES

    @property
    def unit(self) -> Unit:
        return parse_unit(self.text)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a unit file as systemd reads it: continuation lines (`\\`) joined,
    comments and blank lines left out."""
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        yield number, line


def parse_unit(text: str) -> Unit:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for _, line in logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            continue
        key, value = key.strip(), value.strip()
        if value == "" and key in RESETTABLE:
            current[key] = []
            continue
        current.setdefault(key, []).append(value)
    return Unit(sections)


def read_folder(folder: Path) -> list[SystemdFile]:
    """Every text file under a rendered folder (the render marker excluded)."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            files.append(SystemdFile(PurePosixPath(path.relative_to(folder).as_posix()), path.read_text()))
    return files


def parse_timespan(value: str) -> float | None:
    """Seconds of a systemd time span ("75", "75s", "1min 15s", "infinity"); None if unparsable."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
    text = value.strip().lower()
    if text == "infinity":
        return float("inf")
    total, number = 0.0, ""
    token = ""
    for char in text + " ":
        if char.isdigit() or char == ".":
            if token:
                if token not in units or not number:
                    return None
                total += float(number) * units[token]
                number, token = "", ""
            number += char
        elif char.isalpha():
            token += char
        elif number or token:
            if token and token not in units:
                return None
            total += float(number) * units[token or "s"] if number else 0
            number, token = "", ""
    return total
