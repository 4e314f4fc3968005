"""The platform's settings: the only code that reads the environment.

Sources, strongest first: constructor arguments, ``AIDEPLOY_*`` environment variables, the
settings file (``AIDEPLOY_CONFIG_FILE``, else ``config.toml`` in the data directory if present),
then defaults. Everything the platform keeps on disk lives under ``data_dir``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from aideploy.regions import KNOWN_REGIONS
from aideploy.schema import Cloud, rule_error

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "child_process_environment",
    "environment_values",
    "load_settings",
    "mask_url",
]

ENV_PREFIX = "AIDEPLOY_"
_CONFIG_FILE_VARIABLE = f"{ENV_PREFIX}CONFIG_FILE"
_DATA_DIR_VARIABLE = f"{ENV_PREFIX}DATA_DIR"


def _default_data_dir() -> Path:
    return Path.home() / ".aideploy"


class Settings(BaseSettings):
    """Effective configuration; ``aideploy config show`` prints it with secrets masked."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    config_file: Path | None = None
    """The settings file that was read, if any (TOML)."""
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Holds the SQLite database, the artifact store and the Pulumi state by default."""

    # --- storage ---------------------------------------------------------------------
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite+aiosqlite:///<data_dir>/aideploy.db``."""
    artifact_store_url: str | None = None
    """Where model artifacts go: a directory, or ``s3://``, ``gs://``, ``az://``."""
    redis_url: str | None = None
    """With a Redis URL, background jobs use a shared queue (several API replicas)."""
    redis_queue_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "aideploy"
    """Names of the job queues in Redis start with it: installations sharing one Redis need
    different ones."""
    max_upload_bytes: Annotated[int, Field(ge=1)] = 2 * 1024**3

    # --- deployments -------------------------------------------------------------------
    default_cloud: Cloud = Cloud.LOCAL
    """Where a deployment without ``target`` runs when multi-cloud placement is off."""
    default_regions: dict[Cloud, str] = Field(
        default_factory=lambda: {
            Cloud.AWS: "us-east-1",
            Cloud.GCP: "us-central1",
            Cloud.AZURE: "eastus",
        }
    )
    """Per cloud, the region a deployment without one runs in; each a region of that cloud."""
    pulumi_backend_url: str | None = None
    """Pulumi state backend; default a file backend under ``data_dir``."""
    pulumi_passphrase: SecretStr | None = None
    """Encrypts stack secrets with the passphrase secrets provider."""
    pulumi_project: str = "aideploy"
    serving_image: str | None = None
    """Container image of the serving runtime that cloud deployments run (``serving/Dockerfile``,
    pushed to a registry the target can pull from)."""
    crd_schema_dir: Path | None = None
    """Folder of KEDA CRD YAML files that rendered manifests are validated against."""

    # --- API --------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    secret_key: SecretStr | None = None
    """Signs access tokens; generated once into ``data_dir`` when not set."""
    token_ttl_seconds: Annotated[int, Field(ge=60)] = 12 * 3600
    admin_username: str | None = None
    admin_password: SecretStr | None = None
    cors_allowed_origins: list[str] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- analytics ----------------------------------------------------------------------
    api_public_url: str | None = None
    """Where deployments reach this API to report usage; default ``http://<api_host>:<api_port>``
    (enough for local deployments; cloud deployments need an address they can reach)."""
    usage_report_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """How often deployments push their usage to the API."""
    usage_minute_retention_days: Annotated[int, Field(ge=1, le=90)] = 7
    """Per-minute usage is kept this long (to judge thresholds per minute); hourly rows stay."""
    analytics_error_rate_threshold: Annotated[float, Field(gt=0, le=100)] = 5.0
    """Percent of failed requests in an interval that is reported as an anomaly."""
    analytics_latency_threshold_ms: Annotated[float, Field(gt=0)] = 1000.0
    """Mean latency in an interval that is reported as an anomaly."""
    analytics_reference_cloud: Cloud = Cloud.AWS
    """Local deployments are priced as the same usage in this cloud's default region."""
    api_token: SecretStr | None = None
    """Bearer token the command line's API clients (``aideploy analytics``) send."""

    @field_validator("data_dir", "crd_schema_dir", "config_file", mode="after")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("default_regions", mode="after")
    @classmethod
    def _regions_of_their_cloud(cls, value: dict[Cloud, str]) -> dict[Cloud, str]:
        """Checked here, so a typo names this setting instead of failing a later deployment."""
        for cloud, region in value.items():
            if region not in KNOWN_REGIONS[cloud]:
                known = sorted(KNOWN_REGIONS[cloud])
                expected = (
                    f"one of {', '.join(known)}" if known else "no region (it runs on this host)"
                )
                raise rule_error(
                    cls,
                    (cloud.value,),
                    region,
                    f"{region!r} is not a region of {cloud.value}; expected {expected}",
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no secret dirs
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = _config_file_from_environment()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    # --- derived locations -------------------------------------------------------------
    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'aideploy.db'}"

    @cached_property
    def effective_artifact_store_url(self) -> str:
        return self.artifact_store_url or str(self.data_dir / "artifacts")

    @cached_property
    def effective_pulumi_backend_url(self) -> str:
        return self.pulumi_backend_url or f"file://{self.data_dir / 'pulumi'}"

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by ``'**********'`` and the
        credentials of every URL-valued setting by ``'****'``."""
        data = self.model_dump(mode="json")
        data.update(
            effective_database_url=self.effective_database_url,
            effective_artifact_store_url=self.effective_artifact_store_url,
            effective_pulumi_backend_url=self.effective_pulumi_backend_url,
        )
        return {key: _mask_urls(value) for key, value in data.items()}


_URL_MASK = "****"
# Query parameters whose value is a credential, matched anywhere in the name and in any case:
# password=, pwd=, token=, access_token=, api_key=, AccountKey=, sig= (Azure SAS), secret=...
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)


def _mask_urls(value: Any) -> Any:
    """Every URL in a setting's value (strings, lists, dicts) with its credentials masked."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return [_mask_urls(item) for item in value]
    if isinstance(value, dict):
        return {key: _mask_urls(item) for key, item in value.items()}
    return value


def mask_url(url: str) -> str:
    """A URL's password and secret query parameters replaced by ``'****'``.

    ``postgresql://user:secret@host/db?password=x`` becomes
    ``postgresql://user:****@host/db?password=****``; a user part without a password is masked
    whole (it is often a token: ``https://TOKEN@host``). Userinfo is taken up to the last ``@``
    so that an unescaped ``@``, ``/`` or ``?`` in a password is masked with it, never shown.
    Text that is not a URL is returned unchanged.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:{_URL_MASK}" if colon else _URL_MASK
    path, question, query = location.partition("?")
    if question:
        query, hash_mark, fragment = query.partition("#")
        query = "&".join(_mask_parameter(item) for item in query.split("&"))
        location = f"{path}?{query}{hash_mark}{fragment}"
    return f"{scheme}://{userinfo}{at}{location}"


def _mask_parameter(item: str) -> str:
    name, equals, _value = item.partition("=")
    return f"{name}={_URL_MASK}" if equals and _SECRET_PARAMETER.search(name) else item


def _config_file_from_environment() -> Path | None:
    """The settings file named by the environment, else ``config.toml`` in the data dir."""
    named = os.environ.get(_CONFIG_FILE_VARIABLE)
    if named:
        return Path(named).expanduser()
    data_dir = Path(os.environ.get(_DATA_DIR_VARIABLE) or _default_data_dir()).expanduser()
    candidate = data_dir / "config.toml"
    return candidate if candidate.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, recording which settings file (if any) contributed."""
    config_file = _config_file_from_environment()
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"{_CONFIG_FILE_VARIABLE}: no settings file at {config_file}")
    overrides.setdefault("config_file", config_file)
    return Settings(**overrides)


def restrict_torch_unpickling() -> None:
    """Keep every ``torch.load`` of this process restricted to tensors and plain containers
    (torch's own ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch, read at each load): ``torch.export.load``
    otherwise retries a pickle its restricted unpickler refused without restriction, running
    whatever code an uploaded archive names. aideploy never needs more."""
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


def environment_values(names: Iterable[str]) -> dict[str, str]:
    """Those of ``names`` set in this process's environment, read at each call: the credential
    variables a redactor masks, what a confined child may inherit. Here because this module is
    the only reader of the environment."""
    return {name: os.environ[name] for name in names if name in os.environ}


def child_process_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``, for a child process (the local runner's
    serving processes); here because this module is the only reader of the environment."""
    return {**os.environ, **extra}
