"""Fixtures for the hardening tests: a live API process with its own data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hardening.live import LiveApi


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
