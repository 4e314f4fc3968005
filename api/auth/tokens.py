"""Signed, expiring bearer tokens: ``base64url(payload).base64url(HMAC-SHA256)``.

The key is ``settings.secret_key``, or a random key generated once into the data directory with
mode 0600, so tokens survive restarts without any configuration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aideploy.schema import utc_now
from aideploy.settings import Settings

_KEY_FILE = "secret_key"


class InvalidTokenError(Exception):
    """The token is malformed, forged or expired; the message says which (for the log only)."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    expires_at: datetime


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_signing_key(settings: Settings) -> bytes:
    """The configured secret, else the key file in the data dir, created on first use."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / _KEY_FILE
    if not path.exists():
        _create_key_file(path)
    return path.read_bytes().strip()


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first; use theirs
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(48))


class TokenSigner:
    def __init__(self, key: bytes, ttl_seconds: int) -> None:
        self._key = key
        self._ttl = timedelta(seconds=ttl_seconds)

    def sign(self, user_id: str) -> tuple[str, TokenClaims]:
        """A new token for ``user_id`` and its claims (the expiry is returned to the client)."""
        expires_at = (utc_now() + self._ttl).replace(microsecond=0)
        payload = json.dumps(
            {"sub": user_id, "exp": int(expires_at.timestamp()), "nonce": secrets.token_hex(4)},
            separators=(",", ":"),
        ).encode()
        body = _b64encode(payload)
        return f"{body}.{self._signature(body)}", TokenClaims(user_id, expires_at)

    def verify(self, token: str) -> TokenClaims:
        body, dot, signature = token.partition(".")
        # Bytes: compare_digest refuses non-ASCII text, and a header may carry any Latin-1.
        expected = self._signature(body).encode()
        if not dot or not hmac.compare_digest(signature.encode("utf-8", "replace"), expected):
            raise InvalidTokenError("bad signature")
        try:
            payload = json.loads(_b64decode(body))
            claims = TokenClaims(str(payload["sub"]), datetime.fromtimestamp(payload["exp"], UTC))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidTokenError("malformed payload") from exc
        if claims.expires_at <= utc_now():
            raise InvalidTokenError("expired")
        return claims

    def _signature(self, body: str) -> str:
        return _b64encode(
            hmac.new(self._key, body.encode("utf-8", "replace"), hashlib.sha256).digest()
        )
