"""Settings: environment, file and defaults, in that order; secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from aideploy.regions import KNOWN_REGIONS
from aideploy.schema import Cloud, field_errors
from aideploy.settings import load_settings, mask_url

CATALOG = Path(__file__).resolve().parents[2] / "aideploy_iac" / "pricing" / "catalog.json"


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
        ("AIDEPLOY_DEFAULT_REGIONS__AWS", "x", "default_regions.aws"),
        ("AIDEPLOY_DEFAULT_REGIONS__GCP", "us-east-1", "default_regions.gcp"),
        ("AIDEPLOY_DEFAULT_REGIONS__LOCAL", "here", "default_regions.local"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert [error.field for error in field_errors(caught.value)] == [field]


def test_default_regions_are_regions_of_their_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(
        region in KNOWN_REGIONS[cloud] for cloud, region in load_settings().default_regions.items()
    )
    monkeypatch.setenv("AIDEPLOY_DEFAULT_REGIONS__AZURE", "us-east-1")
    with pytest.raises(ValidationError) as caught:
        load_settings()
    [error] = field_errors(caught.value)
    assert error.field == "default_regions.azure"
    assert "'us-east-1' is not a region of azure; expected one of " in error.message
    assert "westeurope" in error.message


def test_every_priced_region_is_a_known_region() -> None:
    """The price catalog and the region list agree, so every priced region can be configured."""
    catalog = json.loads(CATALOG.read_text(encoding="utf-8"))
    for cloud, prices in catalog["clouds"].items():
        assert set(prices["regions"]) <= KNOWN_REGIONS[Cloud(cloud)], cloud


def test_masked_view_hides_secrets_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "AIDEPLOY_PULUMI_PASSPHRASE": "correct horse",
        "AIDEPLOY_ADMIN_PASSWORD": "hunter2",
        "AIDEPLOY_DATABASE_URL": "postgresql+asyncpg://app:s3cret@db:5432/aideploy",
        "AIDEPLOY_REDIS_URL": "redis://:r3dis@cache:6379/0?token=redistok",
        "AIDEPLOY_ARTIFACT_STORE_URL": "s3://AKIAEXAMPLE:awsSecretKey@models/artifacts",
        "AIDEPLOY_API_PUBLIC_URL": "https://ops:publicPw@api.example.com:8443/v1",
        "AIDEPLOY_PULUMI_BACKEND_URL": "azblob://state?storage_account=acct&sig=sasSig",
        "AIDEPLOY_CORS_ALLOWED_ORIGINS": '["https://ghpToken@app.example.com"]',
    }
    for variable, value in secrets.items():
        monkeypatch.setenv(variable, value)
    masked = load_settings().masked()
    text = repr(masked)
    for secret in (
        "correct horse",
        "hunter2",
        "s3cret",
        "r3dis",
        "redistok",
        "awsSecretKey",
        "publicPw",
        "sasSig",
        "ghpToken",
    ):
        assert secret not in text
    assert masked["database_url"] == "postgresql+asyncpg://app:****@db:5432/aideploy"
    assert masked["effective_database_url"] == masked["database_url"]
    assert masked["artifact_store_url"] == "s3://AKIAEXAMPLE:****@models/artifacts"
    assert masked["effective_artifact_store_url"] == masked["artifact_store_url"]
    assert masked["api_public_url"] == "https://ops:****@api.example.com:8443/v1"
    assert masked["pulumi_backend_url"] == "azblob://state?storage_account=acct&sig=****"
    assert masked["pulumi_passphrase"] == "**********"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://db/aideploy?user=app&password=s3cret",
            "postgresql+asyncpg://db/aideploy?user=app&password=****",
        ),
        (
            "https://host/x?api_key=k&access_token=t&AccountKey=a&secret=s&pwd=p&page=2#top",
            "https://host/x?api_key=****&access_token=****&AccountKey=****&secret=****&pwd=****"
            "&page=2#top",
        ),
        ("https://TOKEN@github.com/org/repo", "https://****@github.com/org/repo"),
        ("postgresql://u:p@ss/w?rd@db/x", "postgresql://u:****@db/x"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("/var/lib/aideploy/artifacts", "/var/lib/aideploy/artifacts"),
        ("file:///home/me/.aideploy/pulumi", "file:///home/me/.aideploy/pulumi"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
