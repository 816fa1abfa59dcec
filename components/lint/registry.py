"""The lint rules by code: plain functions over every object read, sharing killsafe.checks' codes.

A code means the same thing for `killsafe check`, `killsafe lint` and the policy pack
(killsafe.checks.RULE_TITLES); these rules need no workload spec, only the objects themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from killsafe.checks import RULE_TITLES, Finding, Level
from killsafe.lint.model import LintObject

LintRule = Callable[[list[LintObject]], Iterator[Finding]]
RULES: dict[str, list[LintRule]] = {}


def rule(code: str) -> Callable[[LintRule], LintRule]:
    """Register a lint rule under a code that killsafe.checks.RULE_TITLES defines."""
    if code not in RULE_TITLES:
        raise ValueError(f"rule {code} has no title in killsafe.checks.RULE_TITLES")

    def register(fn: LintRule) -> LintRule:
        RULES.setdefault(code, []).append(fn)
        return fn

    return register


def finding(code: str, file: str, ref: str, path: str, *, hazard: str, fix: str, level: Level = "error") -> Finding:
    return Finding(code, ref, hazard, level, file=file, path=path, fix=fix)


def run(objects: list[LintObject]) -> list[Finding]:
    """Every finding of every rule, in code order, then by file."""
    found: list[Finding] = []
    for code in sorted(RULES):
        for fn in RULES[code]:
            found.extend(fn(objects))
    return sorted(found, key=lambda f: (f.file, f.rule))


def describe(f: Finding) -> str:
    """One line: where (file, object, field), the code and level, the hazard and the fix."""
    where = ": ".join(p for p in (f.file, f.obj, f.path) if p)
    return f"{where}: {f.rule} {f.level}: {f.message}. Fix: {f.fix}"
