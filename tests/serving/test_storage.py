"""Object-store model URIs -> the fsspec filesystem and options that read them, without a
network: which protocol (so which library) and which account/identity options are chosen, and
a download through a stand-in ``az`` filesystem that records how it was opened."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry, known_implementations

from serving.config import ConfigError, load_config
from serving.model import ModelLoadError, fetch_model, storage_location
from tests.serving.support import build_scale

SIGNED_IN = {"account_name": "acct", "anon": False}


@pytest.mark.parametrize(
    ("source", "account", "url", "options"),
    [
        ("s3://bucket/models/enc/", "acct", "s3://bucket/models/enc/", {}),
        ("gs://bucket/enc/model.onnx", None, "gs://bucket/enc/model.onnx", {}),
        ("file:///models/enc.onnx", None, "file:///models/enc.onnx", {}),
        ("https://example.com/enc.onnx", "acct", "https://example.com/enc.onnx", {}),
        # What the IaC hands Azure targets: az://CONTAINER/BLOB + AZURE_STORAGE_ACCOUNT_NAME.
        ("az://models/enc/model.onnx", "acct", "az://models/enc/model.onnx", SIGNED_IN),
        ("abfs://models/enc/", "acct", "az://models/enc/", SIGNED_IN),
        # The account in the URI wins over the variable.
        (
            "az://models@acct.blob.core.windows.net/enc.onnx",
            "other",
            "az://models/enc.onnx",
            SIGNED_IN,
        ),
        ("abfss://models@acct.dfs.core.windows.net/enc/", None, "az://models/enc/", SIGNED_IN),
        (
            "https://acct.blob.core.windows.net/models/enc/model%20v2.onnx",
            None,
            "az://models/enc/model v2.onnx",
            SIGNED_IN,
        ),
        ("HTTPS://ACCT.blob.core.windows.net/models/", None, "az://models/", SIGNED_IN),
    ],
)
def test_uri_to_filesystem(
    source: str, account: str | None, url: str, options: dict[str, Any]
) -> None:
    assert storage_location(source, azure_account=account) == (url, options)


def test_azure_uris_open_adlfs_signed_in_unless_told_otherwise() -> None:
    url, options = storage_location("https://acct.blob.core.windows.net/models/enc.onnx")
    protocol = fsspec.core.split_protocol(url)[0]
    assert protocol is not None
    assert known_implementations[protocol]["class"] == "adlfs.AzureBlobFileSystem"
    assert options["anon"] is False  # adlfs: DefaultAzureCredential (workload/managed identity)
    public = storage_location("az://models/enc.onnx", azure_account="acct", azure_anonymous=True)
    assert public[1] == {"account_name": "acct", "anon": True}


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("az://models/enc.onnx", "which Azure storage account? Set AZURE_STORAGE_ACCOUNT_NAME"),
        ("az://models@acct.example.com/enc.onnx", "expected az://CONTAINER/PATH"),
        ("https://acct.blob.core.windows.net/", "no container"),
        (
            "https://acct.blob.core.windows.net/models/enc.onnx?sv=2024&sig=secret",
            "a query (SAS token) in an Azure blob URL is not supported",
        ),
    ],
)
def test_unusable_azure_uris_are_refused_with_the_reason(source: str, needle: str) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(needle)) as caught:
        storage_location(source)
    assert str(caught.value).startswith(f"{source.split('?')[0]}")
    assert "secret" not in str(caught.value)  # a SAS signature never reaches the log


def test_configuration_reads_adlfs_variables() -> None:
    environ = {"AZURE_STORAGE_ACCOUNT_NAME": " acct ", "AZURE_STORAGE_ANON": "false"}
    config = load_config({"model": ["az://models/enc.onnx"]}, environ=environ)
    assert (config.azure_storage_account, config.azure_storage_anon) == ("acct", False)
    config = load_config({"model": ["az://m/e.onnx"]}, environ={"AZURE_STORAGE_ANON": "true"})
    assert (config.azure_storage_account, config.azure_storage_anon) == (None, True)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_ANON: expected true or false"):
        load_config({"model": ["az://m/e.onnx"]}, environ={"AZURE_STORAGE_ANON": "maybe"})


class _RecordingAzure(MemoryFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """An in-memory stand-in for adlfs under ``az://`` that keeps the options it was opened
    with (adlfs itself would reach for Azure's token endpoint)."""

    protocol = "az"
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]
    opened_with: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.opened_with.append(options)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return "/" + path.removeprefix("az://").strip("/")


@pytest.fixture
def recording_azure() -> Iterator[type[_RecordingAzure]]:
    fsspec.register_implementation("az", _RecordingAzure, clobber=True)
    try:
        yield _RecordingAzure
    finally:
        _registry.pop("az", None)  # back to the lazily imported adlfs
        _RecordingAzure.clear_instance_cache()


def test_https_blob_url_downloads_through_adlfs_with_the_account(
    tmp_path: Path, recording_azure: type[_RecordingAzure]
) -> None:
    model = build_scale(tmp_path / "scale.onnx").read_bytes()
    recording_azure().pipe("az://models/enc/scale.onnx", model)
    recording_azure.opened_with.clear()
    fetched = fetch_model(
        "https://acct.blob.core.windows.net/models/enc/scale.onnx", tmp_path / "cache"
    )
    assert fetched.read_bytes() == model
    assert recording_azure.opened_with == [SIGNED_IN]
