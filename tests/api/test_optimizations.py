"""Optimization as a durable background job: immediate answer, then completed or failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from aideploy.settings import Settings
from optimizer.errors import InvalidModelError
from tests.api.test_deployments_local import infer, settle

Client = AsyncTestClient[Litestar]


async def finished(client: Client, headers: dict[str, str], model_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows: list[dict[str, Any]] = (
            await client.get(f"/models/{model_id}/optimized", headers=headers)
        ).json()
        if rows and all(row["status"] != "optimizing" for row in rows):
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"optimizations of {model_id} still running")


async def test_quantization_runs_in_the_background_and_reports(
    client: Client, alice: dict[str, str], bob: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    response = await client.post(
        f"/models/{model_id}/optimize",
        json={
            "method": "quantization",
            "target_latency": 1000.0,
            "metadata": {"precision": "int8"},
        },
        headers=alice,
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "optimizing"
    assert job["original_model_id"] == model_id
    assert job["optimization_method"] == "quantization"

    assert (await client.get(f"/models/{model_id}/optimized", headers=bob)).status_code == 404

    [result] = await finished(client, alice, model_id)
    assert result["status"] == "completed", result
    assert result["id"] == job["id"]
    assert Path(result["storage_path"]).is_file()
    assert result["size_reduction_percentage"] is not None
    assert result["latency_reduction_percentage"] is not None
    assert result["metadata"]["precision"] == "int8"
    assert "accuracy_metric" in result["metadata"]
    progress = result["metadata"]["progress"]
    assert progress["step"] == progress["total"]

    deleted = await client.delete(f"/models/{model_id}", headers=alice)
    assert deleted.status_code == 200
    assert not Path(result["storage_path"]).exists()


async def test_failed_optimization_records_the_reason_and_leaves_no_work(
    client: Client,
    alice: dict[str, str],
    upload: Any,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import optimizer

    def half_done_then_refused(source: Path, request: Any, work_dir: Path, **_: Any) -> None:
        work_dir.mkdir(parents=True)
        (work_dir / "candidate.onnx").write_bytes(b"half written")
        raise InvalidModelError("model: no candidate keeps the accuracy within 1 pp")

    monkeypatch.setattr(optimizer, "optimize", half_done_then_refused)
    model_id = (await upload(alice)).json()["model_id"]
    response = await client.post(
        f"/models/{model_id}/optimize", json={"method": "graph"}, headers=alice
    )
    assert response.status_code == 202
    [result] = await finished(client, alice, model_id)
    assert result["status"] == "failed"
    assert result["status_reason"] == "model: no candidate keeps the accuracy within 1 pp"
    assert not (settings.data_dir / "work" / "optimize" / result["id"]).exists()


async def test_optimize_validation(client: Client, alice: dict[str, str], upload: Any) -> None:
    missing = await client.post("/models/nope/optimize", json={"method": "graph"}, headers=alice)
    assert missing.status_code == 404
    model_id = (await upload(alice)).json()["model_id"]
    unsupported = await client.post(
        f"/models/{model_id}/optimize", json={"method": "distillation"}, headers=alice
    )
    assert unsupported.status_code == 422
    assert "distillation" in unsupported.json()["detail"]
    bad = await client.post(
        f"/models/{model_id}/optimize",
        json={"method": "quantization", "metadata": {"precision": "int3"}},
        headers=alice,
    )
    assert bad.status_code == 422
    assert "precision" in bad.json()["detail"]
    bad_size = await client.post(
        f"/models/{model_id}/optimize",
        json={"method": "quantization", "target_size": "ten megabytes"},
        headers=alice,
    )
    assert bad_size.status_code == 422
    assert any("target_size" in error["field"] for error in bad_size.json()["errors"])


async def test_an_optimized_model_deploys_and_holds_its_original(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    response = await client.post(
        f"/models/{model_id}/optimize", json={"method": "graph"}, headers=alice
    )
    assert response.status_code == 202, response.text
    [optimized] = await finished(client, alice, model_id)
    assert optimized["status"] == "completed", optimized
    body = {
        "name": "optimized-local",
        "model_id": optimized["id"],
        "model_type": "optimized",
        "deployment_type": "serverless",
        "scaling_policy": {"min_instances": 0, "max_instances": 1},
        "target": {"cloud": "local"},
    }
    created = await client.post("/deployments", json=body, headers=alice)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["id"]
    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active", active
    assert infer(active["endpoint"], "optimized-local")["outputs"][0]["shape"] == [1, 3]

    refused = await client.delete(f"/models/{model_id}", headers=alice)
    assert refused.status_code == 409, refused.text
    assert (await client.delete(f"/deployments/{deployment_id}", headers=alice)).status_code == 202
    assert await settle(client, alice, deployment_id) == {}
    assert (await client.delete(f"/models/{model_id}", headers=alice)).status_code == 200
    assert not Path(optimized["storage_path"]).exists()
