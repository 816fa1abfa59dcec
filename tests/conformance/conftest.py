"""The conformance suite's workers are the worker tests' real processes; their password check applies too.
`terminal` writes the suite's figures past pytest's capture, so CI output shows them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.worker.conftest import _no_password_in_any_log  # noqa: F401


def terminal(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Write to the terminal whatever -s says (CI output shows the figures)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def write(text: str) -> None:
        if capman is None:
            print(text)
            return
        with capman.global_and_fixture_disabled():
            print(text, flush=True)

    return write
