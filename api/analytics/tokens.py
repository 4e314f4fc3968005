"""Deployment-scoped usage tokens, and the settings a deployment needs to report its usage.

A usage token is ``HMAC-SHA256(key, "aideploy-usage:" + deployment_id)`` with the API's signing
key: it lets a serving process write usage for its own deployment and nothing else (it is never
a user's token and opens no other endpoint). It is derived, not stored, so the API can hand it
to a deployment again after a restart; rotating the signing key revokes every one of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from aideploy.settings import Settings
from api.auth.tokens import load_signing_key

__all__ = [
    "USAGE_TOKEN_PREFIX",
    "api_base_url",
    "usage_environment",
    "usage_token",
    "verify_usage_token",
]

USAGE_TOKEN_PREFIX = "dpl_"  # noqa: S105 - a prefix, not a secret
_PURPOSE = b"aideploy-usage:"


def usage_token(key: bytes, deployment_id: str) -> str:
    digest = hmac.new(key, _PURPOSE + deployment_id.encode(), hashlib.sha256).digest()
    return USAGE_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_usage_token(key: bytes, deployment_id: str, token: str) -> bool:
    return hmac.compare_digest(token.encode(), usage_token(key, deployment_id).encode())


def api_base_url(settings: Settings) -> str:
    """The API's address as deployments see it."""
    if settings.api_public_url:
        return settings.api_public_url.rstrip("/")
    host = settings.api_host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - listening everywhere; reach it locally
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def usage_environment(settings: Settings, deployment_id: str) -> dict[str, str]:
    """The ``AIDEPLOY_SERVE_USAGE_*`` variables that make a serving process report usage."""
    return {
        "AIDEPLOY_SERVE_USAGE_URL": f"{api_base_url(settings)}/deployments/{deployment_id}/usage",
        "AIDEPLOY_SERVE_USAGE_TOKEN": usage_token(load_signing_key(settings), deployment_id),
        "AIDEPLOY_SERVE_USAGE_INTERVAL": str(settings.usage_report_interval_seconds),
    }
