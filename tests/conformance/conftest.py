"""The conformance suite's workers are the worker tests' real processes; their password check applies too."""

from tests.worker.conftest import _no_password_in_any_log  # noqa: F401
