"""Who is asking: basic auth against a hashed credential file, or an auth proxy's identity header.

Basic auth checks Argon2id hashes (argon2-cffi) in a worker thread, at most VERIFY_CONCURRENCY at a
time (each verification takes ~64 MiB and ~50 ms on purpose), and remembers a successful check for
VERIFIED_TTL_SECONDS under an HMAC of the credentials, so a page load does not pay for it again. An
unknown user costs the same verification as a wrong password. The file is re-read when it changes
(a rotated Kubernetes Secret), and a bad new version keeps the old one in force.

The identity header is believed only when the mode was chosen explicitly and the request comes from
one of the trusted proxy addresses (loopback by default: the auth proxy as a sidecar).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from killsafe_worker import contract
from killsafe_worker.config import SettingsError
from killsafe_worker.dashboard.settings import DashboardSettings, IpNetwork

log = logging.getLogger("killsafe.dashboard.auth")

USER_NAME: Final = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
IDENTITY: Final = re.compile(r"^[\x21-\x7e]{1,256}$")
"""A proxy-supplied identity: printable ASCII without spaces (an e-mail address, a login)."""
VERIFY_CONCURRENCY: Final = 2
VERIFIED_TTL_SECONDS: Final = 300.0
VERIFIED_CACHE_SIZE: Final = 1000
RELOAD_CHECK_SECONDS: Final = 5.0
MAX_BASIC_HEADER: Final = 1024


@dataclass(frozen=True)
class Identity:
    """An authenticated person and what they may do."""

    name: str
    role: str
    via: str
    """"basic" or "trusted-header": how the name was established (recorded with every retry)."""

    @property
    def can_retry(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class Credential:
    role: str
    hash: str


def parse_credentials(text: str, source: str) -> dict[str, Credential]:
    """`name:role:argon2-hash` lines (blank lines and `#` comments ignored); raises SettingsError naming
    the line, never echoing a hash."""
    users: dict[str, Credential] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, password_hash = rest.partition(":")
        where = f"{source} line {number}"
        if not USER_NAME.match(name):
            raise SettingsError(where, name[:64], "name:role:hash with a name of A-Z a-z 0-9 _ . @ + - (1-64)")
        if role not in contract.DASHBOARD_ROLES:
            raise SettingsError(where, f"{name}:{role}:...", f"a role of {' or '.join(contract.DASHBOARD_ROLES)}")
        if not password_hash.startswith("$argon2"):
            raise SettingsError(
                where,
                f"{name}:{role}:<hash>",
                "an Argon2 hash ($argon2id$...) from `killsafe-dashboard hash-password`, never a plain password",
            )
        if name in users:
            raise SettingsError(where, name, "each user listed once")
        users[name] = Credential(role, password_hash)
    if not users:
        raise SettingsError(source, "<no users>", "at least one name:role:hash line")
    return users


def hash_password(password: str) -> str:
    """An Argon2id hash with argon2-cffi's current defaults (RFC 9106 low-memory profile)."""
    return PasswordHasher().hash(password)


class Authenticator:
    """Turns a request into an Identity, or None (answered with 401)."""

    async def authenticate(self, request: web.Request) -> Identity | None:
        raise NotImplementedError


class BasicAuthenticator(Authenticator):
    """HTTP basic auth against the credential file (or the injected value)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self._file = Path(settings.credentials_file) if settings.credentials_file else None
        self._value = settings.credentials_value
        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        self._cache_key = os.urandom(32)
        self._verified: dict[bytes, tuple[Identity, float]] = {}
        self._semaphore = asyncio.Semaphore(VERIFY_CONCURRENCY)
        self._checked_at = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._users = self._load()

    def _read(self) -> tuple[str, str]:
        if self._file is None:
            return self._value or "", contract.ENV_DASHBOARD_CREDENTIALS
        try:
            return self._file.read_text(encoding="utf-8"), str(self._file)
        except OSError as err:
            raise SettingsError(
                contract.ENV_DASHBOARD_CREDENTIALS_FILE, str(self._file), f"a readable file ({err.strerror})"
            ) from err

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self._file is None:
            return None
        try:
            stat = self._file.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _load(self) -> dict[str, Credential]:
        stamp = self._file_stamp()
        text, source = self._read()
        users = parse_credentials(text, source)
        self._stamp = stamp
        return users

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self._file is None or now - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        self._checked_at = now
        if self._file_stamp() == self._stamp:
            return
        try:
            users = self._load()
        except SettingsError as err:
            log.error("credential file changed but is invalid; keeping the previous users: %s", err)
            self._stamp = self._file_stamp()
            return
        self._users = users
        self._verified.clear()  # a removed user or a changed password takes effect at once
        log.info("credential file reloaded", extra={"users": len(users)})

    async def authenticate(self, request: web.Request) -> Identity | None:
        self._reload_if_changed()
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded or len(header) > MAX_BASIC_HEADER:
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, separator, password = decoded.partition(":")
        if not separator:
            return None
        digest = hmac.new(self._cache_key, decoded.encode(), hashlib.sha256).digest()
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        credential = self._users.get(name)
        ok = await self._verify(credential.hash if credential else self._dummy_hash, password)
        if not ok or credential is None:
            return None
        identity = Identity(name=name, role=credential.role, via="basic")
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[digest] = (identity, time.monotonic() + VERIFIED_TTL_SECONDS)
        return identity

    async def _verify(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return bool(self._hasher.verify(password_hash, password))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        async with self._semaphore:
            return await asyncio.get_running_loop().run_in_executor(None, verify)


class TrustedHeaderAuthenticator(Authenticator):
    """The identity an auth proxy (oauth2-proxy, ...) put in a header, from a trusted address only."""

    def __init__(self, settings: DashboardSettings) -> None:
        assert settings.user_header is not None
        self._user_header = settings.user_header
        self._groups_header = settings.groups_header
        self._operators = settings.operators
        self._trusted: tuple[IpNetwork, ...] = settings.trusted_proxies

    def _from_trusted_proxy(self, remote: str | None) -> bool:
        if not remote:
            return False
        try:
            address = ipaddress.ip_address(remote.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    async def authenticate(self, request: web.Request) -> Identity | None:
        values = request.headers.getall(self._user_header, [])
        if len(values) != 1:
            return None
        if not self._from_trusted_proxy(request.remote):
            log.warning(
                "identity header from an untrusted address ignored",
                extra={"remote": request.remote, "header": self._user_header},
            )
            return None
        name = values[0].strip()
        if not IDENTITY.match(name):
            return None
        groups: set[str] = set()
        if self._groups_header is not None:
            for value in request.headers.getall(self._groups_header, []):
                groups.update(group.strip() for group in value.split(",") if group.strip())
        is_operator = name in self._operators or any(f"group:{group}" in self._operators for group in groups)
        return Identity(name=name, role="operator" if is_operator else "viewer", via="trusted-header")


def authenticator_for(settings: DashboardSettings) -> Authenticator:
    """Raises SettingsError (exit 2) when the credential file is missing or invalid."""
    if settings.auth_mode == "basic":
        return BasicAuthenticator(settings)
    return TrustedHeaderAuthenticator(settings)
