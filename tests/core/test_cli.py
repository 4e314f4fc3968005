"""The ``aideploy`` command: version, settings, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aideploy import __version__


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess, as a user would."""
    import os

    environment = {**os.environ, **(env or {}), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from aideploy.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"aideploy {__version__}"


def test_config_show_prints_a_table_with_variables(isolated_settings: Path) -> None:
    result = run_cli("config", "show")
    assert result.returncode == 0, result.stderr
    assert "AIDEPLOY_DATA_DIR" in result.stdout
    assert str(isolated_settings) in result.stdout


def test_config_show_json_masks_secrets() -> None:
    result = run_cli("config", "show", "--json", env={"AIDEPLOY_SECRET_KEY": "topsecret"})
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["secret_key"] == "**********"
    assert "topsecret" not in result.stdout


def test_config_show_masks_url_credentials() -> None:
    result = run_cli(
        "config",
        "show",
        env={
            "AIDEPLOY_DATABASE_URL": "postgresql+asyncpg://db/aideploy?user=app&password=s3cret",
            "AIDEPLOY_ARTIFACT_STORE_URL": "s3://KEY:awsSecret@bucket/models",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "awsSecret" not in result.stdout
    assert "password=****" in result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AIDEPLOY_API_PORT": "seventy"}, "AIDEPLOY_API_PORT"),
        ({"AIDEPLOY_DEFAULT_REGIONS__AWS": "x"}, "AIDEPLOY_DEFAULT_REGIONS__AWS: 'x' is not a"),
        ({"AIDEPLOY_CONFIG_FILE": "/nonexistent/aideploy.toml"}, "AIDEPLOY_CONFIG_FILE"),
    ],
)
def test_bad_settings_give_one_line_and_exit_code_2(env: dict[str, str], expected: str) -> None:
    result = run_cli("config", "show", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
