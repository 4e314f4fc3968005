"""The artifact stores: a local directory, and object storage through fsspec."""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from pathlib import Path

import fsspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from aideploy.errors import InputError
from aideploy.settings import Settings
from api.app import create_app
from api.models import orphans
from api.runners.base import RunnerSet
from api.runners.local import LocalRunner
from api.runners.mock import MockEngineRunner
from api.storage import LocalArtifactStore, ObjectArtifactStore, is_object_url, open_artifact_store
from tests.api.conftest import ADMIN, _bearer


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


def test_stores_report_what_they_hold_and_when(tmp_path: Path) -> None:
    for url in (f"memory://bucket/{uuid.uuid4().hex}", f"file://{tmp_path / 'artifacts'}"):
        store = open_artifact_store(url, tmp_path / "data")
        (tmp_path / "one.onnx").write_bytes(b"1")
        store.put(tmp_path / "one.onnx", "models/a/original/one.onnx")
        store.put(_work_dir(tmp_path), "models/a/optimized/o")
        times = store.modification_times("models")
        assert sorted(times) == [
            "models/a/optimized/o/model.onnx",
            "models/a/optimized/o/report.json",
            "models/a/original/one.onnx",
        ], url
        assert all(abs(written - time.time()) < 600 for written in times.values()), url


def test_a_failed_copy_into_the_store_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across filesystems ``put`` copies; a copy cut short (a full disk) leaves nothing."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "model.onnx"
    source.write_bytes(b"x" * 1000)

    def copy_half_then_fail(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(b"x" * 500)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "move", copy_half_then_fail)
    with pytest.raises(OSError, match="No space"):
        store.put(source, "models/m/original/model.onnx")
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []
    assert source.read_bytes() == b"x" * 1000


async def test_start_up_sweeps_leftovers_of_interrupted_work(
    settings: Settings, onnx_model: Path
) -> None:
    """Staged uploads, work folders of models that are gone, and artifacts without a row (once
    they are older than the grace period) are removed when the API starts; everything that
    belongs to a model stays."""
    data = settings.data_dir

    def start() -> AsyncTestClient[Litestar]:
        runners = RunnerSet(local=LocalRunner(settings), cloud=MockEngineRunner(settings))
        return AsyncTestClient(app=create_app(settings, runners=runners))

    async with start() as client:
        admin = await _bearer(client, ADMIN)
        uploaded = await client.post(
            "/models",
            data={"name": "kept", "framework": "onnx"},
            files={"file": ("tiny.onnx", onnx_model.read_bytes(), "application/octet-stream")},
            headers=admin,
        )
        kept_id = uploaded.json()["model_id"]
    artifacts = data / "artifacts" / "models"
    leftovers = {
        "staged": data / "staging" / "upload-1" / "0123abcd",
        "work of a deleted model": data / "work" / "optimize" / str(uuid.uuid4()) / "x.onnx",
        "artifact without a row": artifacts / str(uuid.uuid4()) / "original" / "m.onnx",
        "optimized artifact without a row": artifacts / kept_id / "optimized" / "gone" / "m",
    }
    recent = artifacts / str(uuid.uuid4()) / "original" / "in-flight.onnx"
    belongs = data / "work" / "optimize" / kept_id / "model.onnx"
    for path in [*leftovers.values(), recent, belongs]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"leftover")
    old = time.time() - orphans.GRACE_SECONDS - 60
    for path in leftovers.values():
        os.utime(path, (old, old))

    async with start() as client:
        admin = await _bearer(client, ADMIN)
        model = (await client.get(f"/models/{kept_id}", headers=admin)).json()

    for what, path in leftovers.items():
        assert not path.exists(), what
    assert list((data / "staging").iterdir()) == []
    assert recent.exists(), "an artifact younger than the grace period may be a commit away"
    assert belongs.exists()
    assert Path(model["storage_path"]).read_bytes() == onnx_model.read_bytes()
