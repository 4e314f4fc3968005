"""Settings: environment, file and defaults, in that order; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aideploy.schema import Cloud
from aideploy.settings import load_settings


def test_defaults_live_under_the_data_dir(isolated_settings: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == isolated_settings
    assert (
        settings.effective_database_url
        == f"sqlite+aiosqlite:///{isolated_settings / 'aideploy.db'}"
    )
    assert settings.effective_artifact_store_url == str(isolated_settings / "artifacts")
    assert settings.effective_pulumi_backend_url == f"file://{isolated_settings / 'pulumi'}"
    assert settings.default_cloud is Cloud.LOCAL
    assert settings.config_file is None


def test_environment_overrides_the_file_which_overrides_defaults(
    isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_settings / "config.toml").write_text('api_port = 9000\nlog_level = "DEBUG"\n')
    settings = load_settings()
    assert settings.config_file == isolated_settings / "config.toml"
    assert (settings.api_port, settings.log_level) == (9000, "DEBUG")
    monkeypatch.setenv("AIDEPLOY_API_PORT", "9100")
    assert load_settings().api_port == 9100


def test_named_config_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDEPLOY_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match="AIDEPLOY_CONFIG_FILE"):
        load_settings()


def test_nested_and_list_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDEPLOY_DEFAULT_REGIONS__AWS", "eu-west-1")
    monkeypatch.setenv("AIDEPLOY_CORS_ALLOWED_ORIGINS", '["https://app.example.com"]')
    settings = load_settings()
    assert settings.default_regions[Cloud.AWS] == "eu-west-1"
    assert settings.cors_allowed_origins == ["https://app.example.com"]


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("AIDEPLOY_API_PORT", "70000", "api_port"),
        ("AIDEPLOY_DEFAULT_CLOUD", "oracle", "default_cloud"),
        ("AIDEPLOY_TOKEN_TTL_SECONDS", "5", "token_ttl_seconds"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert field in str(caught.value)


def test_masked_view_hides_secrets_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDEPLOY_PULUMI_PASSPHRASE", "correct horse")
    monkeypatch.setenv("AIDEPLOY_ADMIN_PASSWORD", "hunter2")
    monkeypatch.setenv("AIDEPLOY_DATABASE_URL", "postgresql+asyncpg://app:s3cret@db:5432/aideploy")
    monkeypatch.setenv("AIDEPLOY_REDIS_URL", "redis://:r3dis@cache:6379/0")
    masked = load_settings().masked()
    text = repr(masked)
    for secret in ("correct horse", "hunter2", "s3cret", "r3dis"):
        assert secret not in text
    assert masked["database_url"] == "postgresql+asyncpg://app:****@db:5432/aideploy"
    assert masked["pulumi_passphrase"] == "**********"
