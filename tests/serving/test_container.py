"""The container image definition: what it copies exists, it runs the tested entry points, as a
non-root user, with the pinned dependencies of the ``serving`` extra. (No Docker engine here:
the entry points themselves are exercised in ``test_lifecycle.py``.)"""

from __future__ import annotations

import json
import re
import tomllib

from tests.serving.support import ROOT

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


def test_requirements_pin_exactly_the_serving_extra() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["serving"]
    wanted = {re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower() for requirement in extra}
    lines = [
        line
        for line in (ROOT / "serving" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert all("==" in line for line in lines)
    assert {line.split("==")[0].lower() for line in lines} == wanted
