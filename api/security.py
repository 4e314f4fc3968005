"""What every request and answer goes through: response security headers, input a database cannot
store turned away before any handler runs, and secrets masked in log records and failure reasons.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import SerializationException
from litestar.types import Message, Scope
from pydantic import SecretStr

from aideploy.schema import FieldError
from aideploy.settings import Settings, environment_values
from api.errors import InvalidFieldError, NotFoundError

__all__ = [
    "CONTROL_CHARACTERS",
    "RedactingFilter",
    "RedactingHandler",
    "Redactor",
    "add_security_headers",
    "control_character_field",
    "reject_control_characters",
]

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# The API serves JSON only; the schema pages load their viewer's scripts and styles.
_API_CSP = "default-src 'none'; frame-ancestors 'none'"


async def add_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in _HEADERS.items():
        headers.setdefault(name, value)
    if not scope.get("path", "").startswith("/schema"):
        headers.setdefault("Content-Security-Policy", _API_CSP)
    if scope.get("scheme") == "https":
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


# --- input no database stores ----------------------------------------------------------------

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""C0 controls and DEL, tab and line breaks aside. PostgreSQL cannot store NUL in text or JSON at
all (SQLite can), and no name, id or label needs the others; refusing them everywhere keeps the
two databases answering alike."""

_MESSAGE = "must not contain control characters (NUL, ESC...)"


def control_character_field(value: Any, path: str) -> str | None:
    """The dotted path of the first string (key or value) in ``value`` holding a control
    character, or ``None``."""
    if isinstance(value, str):
        return path if CONTROL_CHARACTERS.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if isinstance(key, str) and CONTROL_CHARACTERS.search(key):
                return where
            found = control_character_field(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = control_character_field(item, f"{path}[{index}]")
            if found:
                return found
    return None


async def reject_control_characters(request: Request[Any, Any, Any]) -> None:
    """Before every handler: an id in the path with a control character names nothing (404); a
    query parameter or a string (key or value) of the JSON body with one is a 422 naming it.
    The multipart upload streams its body itself and checks its own form fields."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
            raise NotFoundError(
                f"{name}: no such resource ({_MESSAGE})", [FieldError(field=name, message=_MESSAGE)]
            )
    for name, value in request.query_params.multi_items():
        if CONTROL_CHARACTERS.search(name) or CONTROL_CHARACTERS.search(value):
            raise InvalidFieldError(name, _MESSAGE)
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return  # no JSON body (the upload reads its stream itself)
    try:
        body = await request.json()  # cached: the handler parses the same bytes again
    except SerializationException:
        return  # malformed JSON: the handler's own parsing answers 400
    field = control_character_field(body, "body")
    if field:
        raise InvalidFieldError(field, _MESSAGE)


# --- secrets in logs and reasons -------------------------------------------------------------

# Environment variables whose values are credentials wherever they appear.
_CREDENTIAL_VARIABLES = (
    "PULUMI_CONFIG_PASSPHRASE",
    "PULUMI_ACCESS_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "ARM_CLIENT_SECRET",
    "GOOGLE_CREDENTIALS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
_MIN_SECRET_LENGTH = 6
_MASK = "[redacted]"
_PATTERNS = [
    # Authorization header values in any text.
    (re.compile(r"\b([Bb]earer|Basic)\s+[A-Za-z0-9._~+/=-]{16,}"), r"\1 " + _MASK),
    # This API's signed tokens (payload.signature) and deployments' usage tokens.
    (re.compile(r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{43}\b"), _MASK),
    (re.compile(r"\bdpl_[A-Za-z0-9_-]{43}\b"), _MASK),
    # key=value / "key": "value" pairs whose key names a secret (not a path: /auth/token:).
    (
        re.compile(
            r"(?i)((?<![/\w-])[\"']?[\w-]*(?:password|passphrase|secret|token|credentials?|"
            r"api[_-]?key|access[_-]?key)[\w-]*[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|"
            r"[^\s,;&)}\]]+)"
        ),
        r"\1" + _MASK,
    ),
    # Passwords inside URLs: scheme://user:password@host.
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), r"\1:" + _MASK + "@"),
]


class Redactor:
    """Masks the configured secrets (passphrase, signing key, admin password, API token), the
    credential environment variables' values, tokens and ``password=...``-like pairs."""

    def __init__(self, secrets: Iterable[SecretStr | str | None] = ()) -> None:
        self._fixed = [
            value
            for value in (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
            if value and len(value) >= _MIN_SECRET_LENGTH
        ]

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        return cls(
            [
                settings.pulumi_passphrase,
                settings.secret_key,
                settings.admin_password,
                settings.api_token,
            ]
        )

    def _secrets(self) -> Iterator[str]:
        yield from self._fixed
        # Read each time: they may be set after start-up.
        for value in environment_values(_CREDENTIAL_VARIABLES).values():
            if len(value) >= _MIN_SECRET_LENGTH:
                yield value

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets(), key=len, reverse=True):
            text = text.replace(secret, _MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message, arguments and traceback are rendered once and
    masked in place, so every handler after it (the host's too) sees the masked text."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
            record.exc_info = None  # formatters would render the raw traceback again
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


class RedactingHandler(logging.Handler):
    """Masks each record in place (a :class:`RedactingFilter`) and writes nothing itself: the
    handlers further up the logger hierarchy (the command's on the root logger, or a host's)
    write the masked record, once. (A writing handler here as well printed every record twice
    as soon as anything, a library's ``logging.basicConfig`` say, gave the root a handler.)"""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.addFilter(RedactingFilter(redactor))

    def emit(self, record: logging.LogRecord) -> None:
        """Nothing to write: the record goes on to the handlers further up."""
