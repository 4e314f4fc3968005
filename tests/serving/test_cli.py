"""``aideploy serve`` runs the same server as ``python -m serving``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.support import (
    ROOT,
    build_scale,
    infer_body,
    scale_input,
    serving_env,
    start_server,
)

AIDEPLOY = shutil.which("aideploy", path=str(Path(sys.executable).parent))


@pytest.fixture
def aideploy() -> list[str]:
    assert AIDEPLOY is not None, "the aideploy command is installed with the package"
    return [AIDEPLOY, "serve"]


def test_aideploy_serve_serves_a_named_model(tmp_path: Path, aideploy: list[str]) -> None:
    server = start_server(
        str(build_scale(tmp_path / "m.onnx")), "--name", "scaler", "--port", "0", command=aideploy
    )
    try:
        status, document = server.json(
            "POST", "/v2/models/scaler/infer", infer_body(scale_input([[1, 1, 1, 1]]))
        )
        assert status == 200
        assert document["outputs"][0]["data"] == [1, 2, 3, 4]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["/nonexistent/model.onnx", "--port", "0"],
            "/nonexistent/model.onnx: no such file or folder",
        ),
        (["--port", "0"], "no model given"),
        (["m.onnx", "--max-body-bytes", "huge"], "--max-body-bytes: expected a byte size"),
    ],
)
def test_aideploy_serve_user_errors_exit_2(
    aideploy: list[str], args: list[str], needle: str
) -> None:
    result = subprocess.run(
        [*aideploy, *args], cwd=ROOT, env=serving_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert needle in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
