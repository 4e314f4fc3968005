"""``aideploy users add`` and ``aideploy api``: one-line errors with exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aideploy.cli import app


@pytest.fixture
def database_url() -> None:
    return None


def test_users_add_reads_the_password_from_stdin() -> None:
    runner = CliRunner()
    created = runner.invoke(
        app, ["users", "add", "erin", "--password-stdin"], input="long-password\n"
    )
    assert created.exit_code == 0, created.output
    assert "created" in created.output
    again = runner.invoke(
        app, ["users", "add", "erin", "--password-stdin"], input="long-password\n"
    )
    assert again.exit_code == 2
    assert "already exists" in again.output
    short = runner.invoke(app, ["users", "add", "frank", "--password-stdin"], input="short\n")
    assert short.exit_code == 2
    assert "at least 8 characters" in short.output
    no_flag = runner.invoke(app, ["users", "add", "gina"])
    assert no_flag.exit_code == 2
    assert "--password-stdin" in no_flag.output


def test_api_refuses_an_unusable_database_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDEPLOY_DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["api", "--port", "8799"])
    assert result.exit_code == 2
    assert "database_url: cannot use" in result.output
    assert "secret" not in result.output
    monkeypatch.setenv("AIDEPLOY_DATABASE_URL", "mysql://somewhere/db")
    result = CliRunner().invoke(app, ["api"])
    assert result.exit_code == 2
    assert "unsupported URL" in result.output
