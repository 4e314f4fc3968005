"""``kill -9`` of a real API process in the middle of an optimization and of a local deployment:
after a restart every job reaches a final state with a reason, nothing is orphaned (no serving
process of the killed API left behind, no artifact without its record), no record is lost. And
a local deployment's crashed server is restarted, visibly."""

from __future__ import annotations

import contextlib
import os
import signal
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


def wait_until(check: Any, what: str, timeout: float = SETTLE_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_killed_mid_operation_every_job_finishes_and_nothing_is_orphaned(tmp_path: Path) -> None:
    api = LiveApi(tmp_path / "data", extra_env={"AIDEPLOY_LOG_LEVEL": "DEBUG"})
    api.data_dir.mkdir()
    api.start()
    deployments: list[str] = []
    try:
        headers = api.headers()
        model_id = upload_model(api, headers, build_onnx_model(tmp_path / "tiny.onnx"))
        optimizing = httpx.post(
            f"{api.url}/models/{model_id}/optimize", json={"method": "auto"}, headers=headers
        )
        assert optimizing.status_code == 202, optimizing.text
        created = httpx.post(f"{api.url}/deployments", json=local_body(model_id), headers=headers)
        assert created.status_code == 202, created.text
        deployment_id = created.json()["id"]
        deployments.append(deployment_id)
        time.sleep(0.5)  # the jobs have started

        api.kill()
        api.start()
        headers = api.headers()

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

        # A crashed server comes back (three times), and the deployment's events say so.
        def events_of(kind: str) -> int:
            events = httpx.get(f"{api.url}/deployments/{deployment_id}/events", headers=headers)
            return sum(event["kind"] == kind for event in events.json())

        for restarts in (1, 2, 3):
            (pid,) = serving_processes(deployment_id)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda n=restarts: events_of("server-restarted") == n, "a restart event")
            status = httpx.get(f"{api.url}/deployments/{deployment_id}", headers=headers).json()
            assert status["status"] == "active", status
            wait_until(
                lambda: httpx.get(f"{settled['endpoint']}/v2/health/ready").status_code == 200,
                "the restarted server serves",
            )
        # The fourth crash in a row: the runner gives up, and the status says why.
        (pid,) = serving_processes(deployment_id)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: events_of("server-failed") == 1, "a give-up event")
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
        assert "DEBUG" in logs
        for secret in (ADMIN[1], headers["Authorization"].removeprefix("Bearer ")):
            assert secret not in logs
    finally:
        api.stop()
        for pid in (pid for deployment in deployments for pid in serving_processes(deployment)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
