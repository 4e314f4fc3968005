"""The disk filling up during an upload: a clear error, nothing partial, the space given back.

The real thing needs a small filesystem: an 8 MiB tmpfs, which only root (CAP_SYS_ADMIN) may
mount; elsewhere that test is skipped, saying so. The unprivileged tests inject the same error
(ENOSPC) where the upload writes: into the staging file, and into the copy into the store.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aideploy.settings import Settings
from api.context import ApiContext
from api.models.upload import _StagingFile
from tests.api.conftest import Client, Upload
from tests.hardening.test_database_outage import assert_error_shape


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) for the data directory; needs root to mount."""
    if os.geteuid() != 0:
        pytest.skip(
            f"a real full disk needs root to mount an 8 MiB tmpfs (running as uid "
            f"{os.geteuid()}); the ENOSPC-injection tests in this file cover the same code"
        )
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "a real full disk needs CAP_SYS_ADMIN to mount an 8 MiB tmpfs, which this root "
            f"lacks (a container without it?): {mounted.stderr.decode().strip()}; the "
            "ENOSPC-injection tests in this file cover the same code"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """A larger upload limit; for the real full disk, the data directory on the small disk."""
    update: dict[str, object] = {"max_upload_bytes": 64 * 1024 * 1024}
    if "small_disk" in request.fixturenames:
        update["data_dir"] = request.getfixturevalue("small_disk")
    return settings.model_copy(update=update)


def assert_nothing_kept(response: Any, data_dir: Path, artifacts_before: list[Path]) -> None:
    assert response.status_code == 507, response.text
    assert_error_shape(response.json(), 507)
    assert "disk" in response.json()["detail"]
    assert list((data_dir / "staging").iterdir()) == []
    assert sorted((data_dir / "artifacts").rglob("*")) == artifacts_before


async def test_disk_full_while_staging_is_507_and_keeps_nothing(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Upload,
    onnx_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (await upload(alice)).status_code == 201
    before = sorted((context.settings.data_dir / "artifacts").rglob("*"))
    write = _StagingFile._write_block
    cut: list[Path] = []

    def half_a_block_fills_the_disk(self: _StagingFile, block: bytes) -> None:
        write(self, block[: len(block) // 2])
        self.handle.flush()
        cut.append(self.path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_StagingFile, "_write_block", half_a_block_fills_the_disk)
    big = tmp_path / "big.onnx"
    big.write_bytes(onnx_model.read_bytes() + b"\0" * (3 * 1024 * 1024))

    response = await upload(alice, path=big, name="too-big-for-the-disk")

    assert cut, "the disk filled while the upload was being staged"
    assert_nothing_kept(response, context.settings.data_dir, before)
    assert [m["name"] for m in (await client.get("/models", headers=alice)).json()] == ["tiny"]


async def test_disk_full_while_storing_is_507_and_keeps_nothing(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Upload,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store is on another filesystem: ``put`` copies, and the copy runs out of space half
    way; neither the partial copy nor the row remains."""
    assert (await upload(alice)).status_code == 201
    before = sorted((context.settings.data_dir / "artifacts").rglob("*"))

    def copy_half_then_fill(source: str, target: str) -> None:
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "move", copy_half_then_fill)
    response = await upload(alice)

    assert_nothing_kept(response, context.settings.data_dir, before)
    assert [m["name"] for m in (await client.get("/models", headers=alice)).json()] == ["tiny"]


async def test_a_full_disk_during_upload_is_a_clear_error_and_keeps_nothing(
    small_disk: Path,
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Upload,
    onnx_model: Path,
    tmp_path: Path,
) -> None:
    kept = await upload(alice)
    assert kept.status_code == 201, kept.text
    before = sorted((context.settings.data_dir / "artifacts").rglob("*"))
    big = tmp_path / "big.onnx"
    big.write_bytes(onnx_model.read_bytes() + b"\0" * (12 * 1024 * 1024))

    response = await upload(alice, path=big, name="too-big-for-the-disk")

    assert response.status_code == 507, response.text
    assert_error_shape(response.json(), 507)
    assert "disk" in response.json()["detail"]
    assert list((context.settings.data_dir / "staging").iterdir()) == []
    assert sorted((context.settings.data_dir / "artifacts").rglob("*")) == before
    names = [model["name"] for model in (await client.get("/models", headers=alice)).json()]
    assert names == ["tiny"]
    again = await upload(alice, name="fits-again")
    assert again.status_code == 201, "the space of the failed upload was given back"
