"""Redis credentials that follow REDIS_URL_FILE, so a rotated password is picked up without a restart.

Kubernetes updates a mounted Secret in place, but a client built from the URL once would keep
sending the old password on every reconnect: live, not ready, forever. Here every client gets a
redis-py CredentialProvider that reads the file again each time a connection is (re)established,
which is exactly when an authentication error can happen: after the password changed, Redis rejects
the next reconnect, and the one after it uses the file's new content. Existing connections stay
authenticated (Redis does not drop them when a password changes). Only the credentials follow the
file; a different host or port in it needs a restart (logged).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.connection import parse_url
from redis.credentials import CredentialProvider

from killsafe_worker.config import SettingsError, redact_url, redis_url_from_env
from killsafe_worker.contract import ENV_REDIS_URL_FILE

log = logging.getLogger(__name__)


def _credentials(url: str) -> tuple[str, ...]:
    options = parse_url(url)  # type: ignore[no-untyped-call]
    username, password = options.get("username"), options.get("password")
    if password is None:
        return ()
    return (str(username), str(password)) if username else (str(password),)


def _server(url: str) -> tuple[Any, ...]:
    options = parse_url(url)  # type: ignore[no-untyped-call]
    return (options.get("host"), options.get("port"), options.get("path"), options.get("db"))


class UrlFileCredentials(CredentialProvider):
    """The URL's username/password; with a URL file, re-read at every connect (the file may rotate)."""

    def __init__(self, url: str, url_file: str | None) -> None:
        self._url_file = url_file
        self._credentials = _credentials(url)
        self._server = _server(url)
        self._unreadable = False

    def get_credentials(self) -> tuple[str, ...]:  # type: ignore[override]  # () means "no AUTH"
        if self._url_file is not None:
            self._reread(self._url_file)
        return self._credentials

    async def get_credentials_async(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.get_credentials()

    def _reread(self, url_file: str) -> None:
        try:
            url = redis_url_from_env({ENV_REDIS_URL_FILE: url_file})
        except SettingsError as err:  # mid-rotation or broken: keep the last good credentials
            if not self._unreadable:
                log.warning("cannot read the Redis URL file; keeping the last credentials", extra={"error": str(err)})
            self._unreadable = True
            return
        self._unreadable = False
        credentials = _credentials(url)
        if credentials != self._credentials:
            log.info("the Redis URL file has new credentials; connecting with them", extra={"file": url_file})
            self._credentials = credentials
        if _server(url) != self._server:
            log.warning(
                "the Redis URL file names another server; restart the worker to use it",
                extra={"file": url_file, "redis": redact_url(url)},
            )
            self._server = _server(url)


def authenticate_with(client: Any, credentials: CredentialProvider) -> None:
    """Make every future connection of a redis-py client (async or sync) authenticate through `credentials`."""
    kwargs = client.connection_pool.connection_kwargs
    kwargs.pop("username", None)
    kwargs.pop("password", None)
    kwargs["credential_provider"] = credentials
