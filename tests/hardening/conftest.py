"""Fixtures for the hardening tests: the API fixtures of ``tests/api`` (in-process app on SQLite
and PostgreSQL, Alice and Bob) and a live API process with its own data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aideploy.settings import ENV_PREFIX
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
    "live_api_on_each_database",
    "onnx_model",
    "postgres_database",
    "runners",
    "settings",
    "upload",
]


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    """A started ``aideploy api`` on SQLite in ``tmp_path``; stopped (SIGKILL if stuck) after."""
    yield from _started(LiveApi(tmp_path / "data"))


@pytest.fixture
def live_api_on_each_database(tmp_path: Path, database_url: str | None) -> Iterator[LiveApi]:
    """``live_api`` on SQLite, then on the session's PostgreSQL database (emptied after)."""
    environment = {f"{ENV_PREFIX}DATABASE_URL": database_url} if database_url else {}
    yield from _started(LiveApi(tmp_path / "data", extra_env=environment))


def _started(api: LiveApi) -> Iterator[LiveApi]:
    api.data_dir.mkdir()
    api.start()
    try:
        yield api
    finally:
        api.stop()
