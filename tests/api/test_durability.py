"""What survives a restart, and what fails fast (the queues: test_job_queue.py)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from aideploy.settings import Settings
from api.app import create_app
from api.db.engine import Database
from api.db.tables import JobRow, ModelRow, OptimizedModelRow, UserRow
from api.runners.automation import AutomationRunner
from api.runners.base import RunnerSet
from api.runners.local import LocalRunner
from api.runners.mock import MockEngineRunner

Client = AsyncTestClient[Litestar]
BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}


async def login(client: Client) -> dict[str, str]:
    token = await client.post(
        "/auth/token", json={"username": "admin", "password": "admin-password"}
    )
    return {"Authorization": f"Bearer {token.json()['token']}"}


async def wait_for(client: Client, headers: dict[str, str], path: str, done: Any) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        body = (await client.get(path, headers=headers)).json()
        if done(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not settle: {body}")


def reachable(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/v2/health/ready", timeout=1):
            return True
    except OSError:
        return False


async def upload_model(client: Client, headers: dict[str, str], model: Path) -> str:
    response = await client.post(
        "/models",
        data={"name": "tiny", "framework": "onnx"},
        files={"file": ("tiny.onnx", model.read_bytes())},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    model_id: str = response.json()["model_id"]
    return model_id


def local_runners(settings: Settings) -> RunnerSet:
    return RunnerSet(local=LocalRunner(settings), cloud=AutomationRunner(settings))


@pytest.fixture
def database_url() -> None:
    return None


async def test_local_deployments_come_back_after_a_restart(
    settings: Settings, onnx_model: Path
) -> None:
    async with AsyncTestClient(app=create_app(settings, runners=local_runners(settings))) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        created = await client.post(
            "/deployments",
            json={"name": "survivor", "model_id": model_id, "target": {"cloud": "local"}},
            headers=headers,
        )
        deployment_id = created.json()["id"]
        active = await wait_for(
            client, headers, f"/deployments/{deployment_id}", lambda d: d["status"] not in BUSY
        )
        assert active["status"] == "active"
        endpoint = active["endpoint"]
        assert reachable(endpoint)
    assert not reachable(endpoint)  # the API stopped its children

    async with AsyncTestClient(app=create_app(settings, runners=local_runners(settings))) as client:
        headers = await login(client)
        deadline = time.monotonic() + 60
        while not reachable(endpoint) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert reachable(endpoint)
        body = (await client.get(f"/deployments/{deployment_id}", headers=headers)).json()
        assert body["status"] == "active"
        assert body["endpoint"] == endpoint


def hide_pulumi_cli(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """A host without the Pulumi CLI, whatever this machine has: nothing on PATH, empty home."""
    for name in ("empty-path", "home"):
        (folder / name).mkdir()
    monkeypatch.setenv("PATH", str(folder / "empty-path"))
    monkeypatch.setenv("HOME", str(folder / "home"))


async def test_cloud_deployment_without_pulumi_cli_is_503_and_creates_nothing(
    settings: Settings, onnx_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_pulumi_cli(monkeypatch, tmp_path)
    async with AsyncTestClient(app=create_app(settings, runners=local_runners(settings))) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        response = await client.post(
            "/deployments",
            json={"name": "cloudy", "model_id": model_id, "target": {"cloud": "aws"}},
            headers=headers,
        )
        assert response.status_code == 503
        assert "Pulumi CLI" in response.json()["detail"]
        assert "get.pulumi.com" in response.json()["detail"]
        assert (await client.get("/deployments", headers=headers)).json() == []


async def test_deleting_a_cloud_deployment_without_the_cli_says_how_to_install_it(
    settings: Settings, onnx_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Created while an engine was there (the mock engine), deleted after the API restarted on
    a host without the CLI: a 503 with the install hint, nothing changed, and the deployment is
    still there (active) to delete later."""
    cloud = settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-tests/{uuid.uuid4().hex}",
        }
    )
    mocked = RunnerSet(local=LocalRunner(cloud), cloud=MockEngineRunner(cloud))
    async with AsyncTestClient(app=create_app(cloud, runners=mocked)) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        created = await client.post(
            "/deployments",
            json={"name": "cloudy", "model_id": model_id, "target": {"cloud": "aws"}},
            headers=headers,
        )
        path = f"/deployments/{created.json()['id']}"
        active = await wait_for(client, headers, path, lambda d: d["status"] not in BUSY)
        assert active["status"] == "active", active

    hide_pulumi_cli(monkeypatch, tmp_path)
    async with AsyncTestClient(app=create_app(cloud, runners=local_runners(cloud))) as client:
        headers = await login(client)
        response = await client.delete(path, headers=headers)
        assert response.status_code == 503, response.text
        assert "get.pulumi.com" in response.json()["detail"]
        kept = await client.get(path, headers=headers)
        assert kept.status_code == 200
        assert kept.json()["status"] == "active"


async def _interrupted_optimization(settings: Settings, model: Path, attempts: int) -> str:
    """Rows as a crashed process leaves them: an optimization whose job was running."""
    database = Database(settings.effective_database_url)
    await database.migrate()
    stored = settings.data_dir / "seeded.onnx"
    stored.write_bytes(model.read_bytes())
    try:
        async with database.session() as session:
            user = UserRow(username="crashed", password_hash="x")
            session.add(user)
            await session.flush()
            row = ModelRow(
                owner_id=user.id, name="m", framework="onnx", version="1",
                storage_path=str(stored), serving_path=str(stored), sha256="0" * 64,
                size_bytes=stored.stat().st_size,
            )  # fmt: skip
            session.add(row)
            await session.flush()
            optimized = OptimizedModelRow(
                owner_id=user.id, original_model_id=row.id, optimization_method="graph",
                status="optimizing", request={"method": "graph"},
            )  # fmt: skip
            session.add(optimized)
            await session.flush()
            session.add(
                JobRow(
                    owner_id=user.id,
                    kind="optimize",
                    subject_id=optimized.id,
                    status="running",
                    attempts=attempts,
                )
            )
            return optimized.id
    finally:
        await database.dispose()


async def _optimized_status(settings: Settings, optimized_id: str) -> tuple[str, str | None]:
    database = Database(settings.effective_database_url)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            async with database.session() as session:
                row = await session.get(OptimizedModelRow, optimized_id)
                assert row is not None
                if row.status != "optimizing":
                    return row.status, row.status_reason
            await asyncio.sleep(0.2)
        raise AssertionError("the resumed job never finished")
    finally:
        await database.dispose()


async def test_interrupted_jobs_resume_at_start_up(settings: Settings, onnx_model: Path) -> None:
    optimized_id = await _interrupted_optimization(settings, onnx_model, attempts=1)
    async with AsyncTestClient(app=create_app(settings, runners=local_runners(settings))):
        status, reason = await _optimized_status(settings, optimized_id)
    assert status == "completed", reason


async def test_jobs_interrupted_too_often_fail_with_a_reason(
    settings: Settings, onnx_model: Path
) -> None:
    optimized_id = await _interrupted_optimization(settings, onnx_model, attempts=3)
    async with AsyncTestClient(app=create_app(settings, runners=local_runners(settings))):
        status, reason = await _optimized_status(settings, optimized_id)
    assert status == "failed"
    assert reason is not None
    assert "interrupted 3 times" in reason


async def test_events_stream_as_server_sent_events(settings: Settings, onnx_model: Path) -> None:
    async with AsyncTestClient(app=create_app(settings, runners=local_runners(settings))) as client:
        headers = await login(client)
        model_id = await upload_model(client, headers, onnx_model)
        deployment_id = (
            await client.post(
                "/deployments",
                json={"name": "streamed", "model_id": model_id, "target": {"cloud": "local"}},
                headers=headers,
            )
        ).json()["id"]
        events: list[tuple[str, str]] = []
        async with client.stream(
            "GET",
            f"/deployments/{deployment_id}/events",
            headers={**headers, "Accept": "text/event-stream"},
        ) as stream:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    events.append((kind, line.partition(":")[2].strip()))
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "operation-started"
        assert "ready" in kinds
        assert kinds[-1] == "end"
        assert events[-1][1] == "active"
        assert json.loads(events[0][1])["operation_id"]
        await client.delete(f"/deployments/{deployment_id}", headers=headers)
        await wait_for(client, headers, "/deployments", lambda rows: rows == [])
