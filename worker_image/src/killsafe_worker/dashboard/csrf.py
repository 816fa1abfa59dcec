"""CSRF tokens for every state-changing form: an HMAC of the signed-in name and the issue time.

Browsers send basic-auth credentials (and an auth proxy's cookie) with any request to the origin, a
forged cross-site form included, so every POST must also carry a token only our own page can know.
The token is stateless (nothing stored per session) and bound to the identity that received it: a
viewer's token never works for an operator, and a token expires after TOKEN_TTL_SECONDS. The key is
random per process, so a restarted dashboard refuses older tokens (reload the page); run one replica.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Final

TOKEN_TTL_SECONDS: Final = 12 * 3600
FIELD: Final = "csrf_token"


class CsrfTokens:
    def __init__(self, key: bytes | None = None, ttl_seconds: float = TOKEN_TTL_SECONDS) -> None:
        self._key = key or os.urandom(32)
        self._ttl = ttl_seconds

    def _mac(self, identity: str, issued: int) -> str:
        return hmac.new(self._key, f"{identity}\0{issued}".encode(), hashlib.sha256).hexdigest()

    def issue(self, identity: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(identity, issued)}"

    def valid(self, token: str | None, identity: str, now: float | None = None) -> bool:
        if not token or token.count(".") != 1:
            return False
        issued_text, mac = token.split(".")
        if not issued_text.isdigit():
            return False
        issued = int(issued_text)
        current = time.time() if now is None else now
        if not (issued - 60 <= current <= issued + self._ttl):
            return False
        return hmac.compare_digest(mac, self._mac(identity, issued))
