"""Fixtures for the hardening tests: the API fixtures of ``tests/api`` (in-process app on SQLite
and PostgreSQL, Alice and Bob) and a live API process with its own data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import (
    alice,
    api,
    bob,
    client,
    context,
    database_url,
    fast_password_hashes,
    onnx_model,
    postgres_database,
    runners,
    settings,
    upload,
)
from tests.hardening.live import LiveApi

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


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    """A started ``aideploy api`` on SQLite in ``tmp_path``; stopped (SIGKILL if stuck) after."""
    api = LiveApi(tmp_path / "data")
    api.data_dir.mkdir()
    api.start()
    try:
        yield api
    finally:
        api.stop()
