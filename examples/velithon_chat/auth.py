"""Signed tokens for the Velithon chat: ``POST /api/token`` issues them, the socket and REST check them.

A token is ``<payload>.<signature>``: the payload is base64url JSON ``{"sub": username, "exp":
unix_seconds}`` and the signature is base64url HMAC-SHA256 of the payload text with the server's
secret. Nobody without the secret can make one, change its username or extend it.

The secret comes from ``VELITHON_SECRET`` (any string; use 32+ random bytes). When it is unset, each
process draws a random one at start: tokens then die with the process and are not accepted by other
workers, so set it whenever several processes serve the same users. ``VELITHON_TOKEN_TTL`` is the
lifetime in seconds (default 86400).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from typing import Optional

SECRET_ENV = "VELITHON_SECRET"
TTL_ENV = "VELITHON_TOKEN_TTL"
DEFAULT_TTL = 86400.0
# Longer than any token we issue (usernames are at most 64 characters); bounds the work per check.
MAX_TOKEN_LENGTH = 1024


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies HMAC-SHA256 tokens that name a user and expire."""

    def __init__(self, secret: bytes, ttl: float = DEFAULT_TTL):
        if not secret:
            raise ValueError("the token secret must not be empty")
        if ttl <= 0:
            raise ValueError("the token lifetime must be positive")
        self._secret = secret
        self.ttl = ttl

    def _sign(self, payload: str) -> str:
        return _b64encode(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, username: str, now: Optional[float] = None) -> str:
        """A token for ``username``, valid for ``ttl`` seconds from ``now``."""
        issued = time.time() if now is None else now
        claims = {"sub": username, "exp": int(issued + self.ttl)}
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: Optional[str], now: Optional[float] = None) -> Optional[str]:
        """The username a valid, unexpired token names; ``None`` for anything else."""
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            return None
        payload, signature = token.split(".")
        try:
            expected = self._sign(payload)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            claims = json.loads(_b64decode(payload))
        except ValueError:
            return None
        if not isinstance(claims, dict):
            return None
        sub, exp = claims.get("sub"), claims.get("exp")
        if not isinstance(sub, str) or not isinstance(exp, int):
            return None
        if exp <= (time.time() if now is None else now):
            return None
        return sub


def signer_from_env() -> TokenSigner:
    """The signer configured by ``VELITHON_SECRET`` / ``VELITHON_TOKEN_TTL`` (see module docs)."""
    secret_text = os.environ.get(SECRET_ENV)
    secret = secret_text.encode("utf-8") if secret_text else secrets.token_bytes(32)
    ttl_text = os.environ.get(TTL_ENV)
    try:
        ttl = float(ttl_text) if ttl_text else DEFAULT_TTL
    except ValueError:
        raise ValueError(f"{TTL_ENV} must be a number of seconds, not {ttl_text!r}") from None
    return TokenSigner(secret, ttl)
