"""``kill -9`` of a real API process in the middle of an optimization and of a local deployment
(once while the deployment is being created, once while it is active): after a restart every
job reaches a final state with a reason, nothing is orphaned (no serving process of the killed
API left behind, no artifact without its record), no record is lost, an active deployment comes
back on its own endpoint. And a local deployment's crashed server is restarted, visibly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import build_onnx_model
from tests.api.test_deployments_local import local_body
from tests.hardening.live import ADMIN, LiveApi, upload_model

BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}
SETTLE_SECONDS = 120.0


def serving_processes(deployment_id: str) -> list[int]:
    """Pids of the serving processes started for ``deployment_id`` (by their usage URL)."""
    needle = f"/deployments/{deployment_id}/usage".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if needle in environ and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until(check: Any, what: str, timeout: float = SETTLE_SECONDS, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")


def events_of(api: LiveApi, headers: dict[str, str], deployment_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api.url}/deployments/{deployment_id}/events", headers=headers)
    events: list[dict[str, Any]] = response.json()
    return events


def stored(api: LiveApi, query: str) -> list[tuple[Any, ...]]:
    """Rows of the (stopped or running) API's SQLite database, read directly."""
    with contextlib.closing(sqlite3.connect(api.data_dir / "aideploy.db")) as database:
        return database.execute(query).fetchall()


def start_work(api: LiveApi, tmp_path: Path) -> tuple[dict[str, str], str, str]:
    """Upload a model, start its optimization and a local deployment of it: (headers, model
    id, deployment id)."""
    headers = api.headers()
    model_id = upload_model(api, headers, build_onnx_model(tmp_path / "tiny.onnx"))
    optimizing = httpx.post(
        f"{api.url}/models/{model_id}/optimize", json={"method": "auto"}, headers=headers
    )
    assert optimizing.status_code == 202, optimizing.text
    created = httpx.post(f"{api.url}/deployments", json=local_body(model_id), headers=headers)
    assert created.status_code == 202, created.text
    return headers, model_id, str(created.json()["id"])


def settle(api: LiveApi, headers: dict[str, str], model_id: str, deployment_id: str) -> str:
    """After a restart: the optimization and the deployment reach final states, every job row
    is final (failed ones with their reason), the deployment is active with exactly one server
    and no record was lost. The deployment's endpoint."""

    def optimization() -> dict[str, Any] | None:
        rows = httpx.get(f"{api.url}/models/{model_id}/optimized", headers=headers).json()
        return rows[-1] if rows and rows[-1]["status"] != "optimizing" else None

    finished = wait_until(optimization, "the optimization finishes after the restart")
    assert finished["status"] in {"completed", "failed"}, finished
    if finished["status"] == "failed":
        assert finished["status_reason"], finished

    def deployment() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(
            f"{api.url}/deployments/{deployment_id}", headers=headers
        ).json()
        return body if body["status"] not in BUSY else None

    settled = wait_until(deployment, "the deployment settles after the restart")
    assert settled["status"] == "active", settled["status_reason"]
    assert httpx.get(f"{settled['endpoint']}/v2/health/ready").status_code == 200
    assert len(serving_processes(deployment_id)) == 1, "the killed API's server is gone"
    models = httpx.get(f"{api.url}/models", headers=headers).json()
    assert [model["id"] for model in models] == [model_id]
    wait_until(
        lambda: not stored(api, "SELECT id FROM jobs WHERE status IN ('queued', 'running')"),
        "every job is final",
    )
    assert stored(api, "SELECT id FROM jobs WHERE status = 'failed' AND error IS NULL") == []
    # The killed process's upload staging and work folders were swept at start-up.
    for folder in ("staging", "work/optimize"):
        left = [path for path in (api.data_dir / folder).rglob("*") if path.is_file()]
        assert left == [], f"{folder} after the restart: {left}"
    return str(settled["endpoint"])


def test_killed_while_creating_the_jobs_resume(tmp_path: Path) -> None:
    api = LiveApi(tmp_path / "data")
    api.data_dir.mkdir()
    api.start()
    deployment_id = ""
    try:
        headers, model_id, deployment_id = start_work(api, tmp_path)
        # The server process is held stopped as soon as it exists (long before its imports are
        # done), so it cannot become ready first: the kill lands mid-create, however fast the
        # server starts. It resumes once the API is gone, as a server that was still starting.
        starting = wait_until(
            lambda: serving_processes(deployment_id), "the deployment's server exists", 60, 0.005
        )
        for pid in starting:
            os.kill(pid, signal.SIGSTOP)
        wait_until(
            lambda: any(
                event["kind"] == "starting" for event in events_of(api, headers, deployment_id)
            ),
            "the deployment's server is starting",
            timeout=60,
        )
        api.kill()
        for pid in starting:
            os.kill(pid, signal.SIGCONT)
        assert stored(api, f"SELECT status FROM deployments WHERE id = '{deployment_id}'") == [
            ("creating",)
        ], "the kill landed while the deployment was being created"
        assert stored(api, "SELECT status FROM optimized_models") == [("optimizing",)]

        api.start()
        settle(api, api.headers(), model_id, deployment_id)
    finally:
        api.stop()
        for pid in serving_processes(deployment_id) if deployment_id else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_killed_while_active_it_comes_back_and_a_crashed_server_restarts(tmp_path: Path) -> None:
    api = LiveApi(tmp_path / "data", extra_env={"AIDEPLOY_LOG_LEVEL": "DEBUG"})
    api.data_dir.mkdir()
    api.start()
    deployment_id = ""
    try:
        headers, model_id, deployment_id = start_work(api, tmp_path)

        def active() -> str | None:
            body = httpx.get(f"{api.url}/deployments/{deployment_id}", headers=headers).json()
            assert body["status"] in {"creating", "active"}, body
            return str(body["endpoint"]) if body["status"] == "active" else None

        endpoint = wait_until(active, "the deployment is active")
        (first_server,) = serving_processes(deployment_id)
        api.kill()
        api.start()
        headers = api.headers()
        assert settle(api, headers, model_id, deployment_id) == endpoint, "same endpoint"
        assert first_server not in serving_processes(deployment_id)

        # A crashed server comes back (three times), and the deployment's events say so.
        def count(kind: str) -> int:
            return sum(event["kind"] == kind for event in events_of(api, headers, deployment_id))

        for restarts in (1, 2, 3):
            (pid,) = serving_processes(deployment_id)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda n=restarts: count("server-restarted") == n, "a restart event")
            status = httpx.get(f"{api.url}/deployments/{deployment_id}", headers=headers).json()
            assert status["status"] == "active", status
            wait_until(
                lambda: httpx.get(f"{endpoint}/v2/health/ready").status_code == 200,
                "the restarted server serves",
            )
        # The fourth crash in a row: the runner gives up, and the status says why.
        (pid,) = serving_processes(deployment_id)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: count("server-failed") == 1, "a give-up event")
        status = httpx.get(f"{api.url}/deployments/{deployment_id}", headers=headers).json()
        assert status["status"] == "failed", status
        assert "exited" in status["status_reason"], status

        deleted = httpx.delete(f"{api.url}/deployments/{deployment_id}", headers=headers)
        assert deleted.status_code == 202, deleted.text
        wait_until(
            lambda: (
                httpx.get(f"{api.url}/deployments/{deployment_id}", headers=headers).status_code
                == 404
            ),
            "the deployment is deleted",
        )
        assert serving_processes(deployment_id) == []
        assert httpx.delete(f"{api.url}/models/{model_id}", headers=headers).status_code == 200
        artifacts = api.data_dir / "artifacts"
        left = [path for path in artifacts.rglob("*") if path.is_file()]
        assert left == [], f"artifacts without a record: {left}"

        # The process's own DEBUG log (and its servers') holds no password or token.
        logs = "".join(path.read_text(errors="replace") for path in api.data_dir.rglob("*.log"))
        assert re.search(r"DEBUG aideploy\.api", logs), "the API logged at DEBUG"
        api_lines = [line for line in api.log().splitlines() if "aideploy.api" in line]
        one_format = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING|ERROR) aideploy\.")
        assert all(one_format.match(line) for line in api_lines), "each record written once"
        for secret in (ADMIN[1], headers["Authorization"].removeprefix("Bearer ")):
            assert secret not in logs
    finally:
        api.stop()
        for pid in serving_processes(deployment_id) if deployment_id else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
