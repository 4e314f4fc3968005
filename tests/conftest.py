"""Suite-wide fixtures: every test runs with its own data directory and no inherited settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aideploy.settings import ENV_PREFIX

# Variables CI sets on purpose for the whole run; every other AIDEPLOY_* variable is dropped.
_KEPT = {
    f"{ENV_PREFIX}CRD_SCHEMA_DIR",
    f"{ENV_PREFIX}TEST_POSTGRES_URL",
    f"{ENV_PREFIX}TEST_REDIS_URL",
}


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the settings at a fresh data directory and hide the developer's own settings."""
    saved = {key: value for key, value in os.environ.items() if key.startswith(ENV_PREFIX)}
    for key in saved:
        if key not in _KEPT:
            del os.environ[key]
    data_dir = tmp_path_factory.mktemp("aideploy-data")
    os.environ[f"{ENV_PREFIX}DATA_DIR"] = str(data_dir)
    try:
        yield data_dir
    finally:
        for key in [key for key in os.environ if key.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)
