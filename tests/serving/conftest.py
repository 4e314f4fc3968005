"""Fixtures: the tiny models and one shared server process (helpers live in ``support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.support import (
    Server,
    build_add,
    build_grid,
    build_multi,
    build_scale,
    build_wide,
    start_server,
)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    build_scale(folder / "scale.onnx")
    build_multi(folder / "multi.onnx")
    build_add(folder / "add.onnx")
    build_grid(folder / "grid.onnx")
    build_wide(folder / "wide.onnx")
    return folder


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:
    """One server with five models, a 1 MiB body limit and batching off."""
    running = start_server(
        str(model_dir / "scale.onnx"),
        str(model_dir / "multi.onnx"),
        f"adder={model_dir / 'add.onnx'}",
        str(model_dir / "grid.onnx"),
        str(model_dir / "wide.onnx"),
        "--port",
        "0",
        "--threads",
        "1",
        "--max-body-bytes",
        "1MiB",
    )
    yield running
    assert running.stop() == 0
