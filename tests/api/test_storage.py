"""The artifact stores: a local directory, and object storage through fsspec."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from aideploy.errors import InputError
from api.storage import LocalArtifactStore, ObjectArtifactStore, is_object_url, open_artifact_store


@pytest.fixture
def database_url() -> None:
    return None


def _work_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "model.onnx").write_bytes(b"onnx")
    (work / "report.json").write_text("{}")
    return work


def test_object_store_round_trip(tmp_path: Path) -> None:
    url = f"memory://bucket/{uuid.uuid4().hex}"
    store = open_artifact_store(url, tmp_path / "data")
    assert isinstance(store, ObjectArtifactStore)
    folder = store.put(_work_dir(tmp_path), "models/m/optimized/o")
    assert folder == f"{url}/models/m/optimized/o"
    assert not (tmp_path / "work").exists()  # moved in
    assert store.local_path(f"{folder}/model.onnx").read_bytes() == b"onnx"
    single = tmp_path / "original.onnx"
    single.write_bytes(b"original")
    location = store.put(single, "models/m/original/original.onnx")
    assert store.local_path(location).read_bytes() == b"original"
    store.delete_prefix("models/m")
    assert fsspec.filesystem("memory").find(url) == []
    assert not (tmp_path / "data" / "artifact-cache" / "models" / "m").exists()


def test_local_store_keeps_keys_inside_its_root(tmp_path: Path) -> None:
    store = open_artifact_store(f"file://{tmp_path / 'artifacts'}", tmp_path)
    assert isinstance(store, LocalArtifactStore)
    location = store.put(_work_dir(tmp_path), "models/m/optimized/o")
    assert Path(location, "model.onnx").read_bytes() == b"onnx"
    with pytest.raises(InputError, match="escapes"):
        store.put(tmp_path / "elsewhere", "../../etc")
    store.delete_prefix("models/m")
    assert not Path(location).exists()


def test_unknown_object_store_protocol_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="artifact_store_url"):
        open_artifact_store("nosuchfs://bucket", tmp_path)
    assert is_object_url("gs://bucket")
    assert not is_object_url("/srv/artifacts")
