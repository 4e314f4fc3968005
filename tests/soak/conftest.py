"""The soak suite reuses the hardening fixtures: a live API process and the in-process API."""

from tests.hardening.conftest import (
    alice,
    api,
    bob,
    client,
    context,
    database_url,
    fast_password_hashes,
    live_api,
    onnx_model,
    postgres_database,
    runners,
    settings,
    upload,
)

__all__ = [
    "alice",
    "api",
    "bob",
    "client",
    "context",
    "database_url",
    "fast_password_hashes",
    "live_api",
    "onnx_model",
    "postgres_database",
    "runners",
    "settings",
    "upload",
]
