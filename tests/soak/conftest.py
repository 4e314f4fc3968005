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
    live_api_on_each_database,
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
    "live_api_on_each_database",
    "onnx_model",
    "postgres_database",
    "runners",
    "settings",
    "upload",
]
