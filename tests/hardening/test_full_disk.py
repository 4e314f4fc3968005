"""The disk filling up during an upload: a clear error, nothing partial, the space given back."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aideploy.settings import Settings
from api.context import ApiContext
from tests.api.conftest import Client, Upload
from tests.hardening.test_database_outage import assert_error_shape


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) for the data directory; needs root to mount."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def settings(settings: Settings, small_disk: Path) -> Settings:
    return settings.model_copy(
        update={"data_dir": small_disk, "max_upload_bytes": 64 * 1024 * 1024}
    )


async def test_a_full_disk_during_upload_is_a_clear_error_and_keeps_nothing(
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
