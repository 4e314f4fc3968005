"""The container image definition: what it copies exists, it runs the tested entry points, as a
non-root user, with the pinned dependencies of the ``serving`` extra. (No Docker engine here:
the entry points themselves are exercised in ``test_lifecycle.py``.)"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.serving.support import (
    ROOT,
    build_scale,
    infer_body,
    scale_input,
    serving_env,
    start_server,
)

DOCKERFILE = (ROOT / "serving" / "Dockerfile").read_text()


def _instructions(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(f"{keyword} ")
    ]


def test_runs_the_lean_entry_point_and_its_health_check() -> None:
    assert [json.loads(item) for item in _instructions("ENTRYPOINT")] == [
        ["python", "-m", "serving"]
    ]
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert healthcheck.split("CMD", 1)[1].strip() == '["python", "-m", "serving.healthcheck"]'
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]


def test_runs_as_a_non_root_user() -> None:
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in ("0", "root")


def test_copies_only_files_that_exist_and_the_ignore_file_keeps_them() -> None:
    kept = [
        line[1:]
        for line in (ROOT / "serving" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for copy in _instructions("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(
                source == keep or (keep.endswith("/") and source.startswith(keep)) for keep in kept
            ), source


def test_listens_on_all_interfaces_at_port_with_the_adapter_readiness_path() -> None:
    environment = " ".join(_instructions("ENV"))
    assert "AIDEPLOY_SERVE_HOST=0.0.0.0" in environment
    assert "PORT=8080" in environment
    assert "AWS_LWA_READINESS_CHECK_PATH=/v2/health/ready" in environment


def test_requirements_pin_exactly_the_serving_and_object_store_extras() -> None:
    """One image for every platform: it carries s3fs, gcsfs and adlfs, not a build variant."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    wanted = {
        re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower()
        for extra in ("serving", "serving-s3", "serving-gcs", "serving-azure")
        for requirement in extras[extra]
    } - {"aideploy"}
    assert {"s3fs", "gcsfs", "adlfs"} <= wanted
    lines = [
        line
        for line in (ROOT / "serving" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert all("==" in line for line in lines)
    assert {line.split("==")[0].lower() for line in lines} == wanted


def test_the_image_layout_serves_and_passes_its_health_check(tmp_path: Path) -> None:
    """Only what the Dockerfile copies into /app (less what the ignore file drops), run the way
    the image runs it: configured by its ENV lines plus a model variable, from that folder."""
    app = tmp_path / "app"
    ignored = [
        line.removeprefix("**/")
        for line in (ROOT / "serving" / "Dockerfile.dockerignore").read_text().splitlines()
        if (line and line[0] not in "#!*") or line.startswith("**/")
    ]
    for copy in _instructions("COPY"):
        *sources, destination = copy.split()
        if copy.startswith("--from=") or not destination.rstrip("/").endswith(
            ("aideploy", "serving")
        ):
            continue
        for source in sources:
            files = (
                [ROOT / source] if (ROOT / source).is_file() else sorted((ROOT / source).rglob("*"))
            )
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                dropped = any(
                    fnmatch.fnmatch(relative, pattern) or pattern in relative.split("/")
                    for pattern in ignored
                )
                if file.is_file() and not dropped:
                    (app / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(file, app / relative)
    assert not (app / "serving" / "cli.py").exists()
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import aideploy, serving; print(aideploy.__file__, serving.__file__)",
        ],
        cwd=app,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(Path(path).is_relative_to(app) for path in where.stdout.split())  # not the checkout
    environment = dict(re.findall(r"(\w+)=(\S+)", " ".join(_instructions("ENV"))))
    environment.update(
        AIDEPLOY_SERVE_MODEL_URI=str(build_scale(tmp_path / "model.onnx")),
        AIDEPLOY_SERVE_MODEL_NAME="clf",
        AIDEPLOY_SERVE_MODEL_DIR=str(tmp_path / "models"),
        PORT="0",
    )
    server = start_server(env=environment, cwd=app)
    try:
        status, document = server.json(
            "POST", "/v2/models/clf/infer", infer_body(scale_input([[1, 1, 1, 1]]))
        )
        assert status == 200
        assert document["outputs"][0]["data"] == [1, 2, 3, 4]
        probe = subprocess.run(
            [sys.executable, "-m", "serving.healthcheck"],
            cwd=app,
            env=serving_env({**environment, "PORT": str(server.port)}),
            capture_output=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        assert server.stop() == 0
