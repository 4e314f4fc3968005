"""The embedded local target end to end: a real serving process per deployment."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from aideploy.settings import Settings
from api.db.engine import Database
from api.db.tables import DeploymentRow
from api.runners import local as local_module
from api.runners.base import RunnerSet
from api.runners.local import LocalRunner

Client = AsyncTestClient[Litestar]
BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}


async def settle(client: Client, headers: dict[str, str], deployment_id: str) -> dict[str, Any]:
    """Poll until the deployment's operation ends; its final state (or ``{}`` once deleted)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = await client.get(f"/deployments/{deployment_id}", headers=headers)
        if response.status_code == 404:
            return {}
        body: dict[str, Any] = response.json()
        if body["status"] not in BUSY:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"deployment {deployment_id} still busy: {body}")


def infer(endpoint: str, name: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{endpoint}/v2/models/{name}/infer",
        data=json.dumps(
            {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def reachable(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/v2/health/live", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def database_url() -> None:
    """The lifecycle is engine-bound, not database-bound: SQLite suffices here."""
    return


def local_body(model_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "tiny-local",
        "model_id": model_id,
        "model_type": "original",
        "deployment_type": "serverless",
        "resource_requirements": {"cpu": "1", "memory": "512Mi", "gpu": None, "timeout": 30},
        "scaling_policy": {"min_instances": 0, "max_instances": 1, "target_cpu_utilization": 70},
        "target": {"cloud": "local"},
        **overrides,
    }


async def test_local_lifecycle(client: Client, alice: dict[str, str], upload: Any) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    created = await client.post("/deployments", json=local_body(model_id), headers=alice)
    assert created.status_code == 202, created.text
    deployment = created.json()
    assert deployment["status"] == "creating"
    assert deployment["endpoint"] is None
    deployment_id = deployment["id"]

    busy = await client.post(f"/deployments/{deployment_id}/hibernate", headers=alice)
    assert busy.status_code == 409
    assert "creating" in busy.json()["detail"]

    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active", active
    endpoint = active["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    outputs = infer(endpoint, "tiny-local")["outputs"]
    assert outputs[0]["name"] == "Y"

    assert (await client.delete(f"/models/{model_id}", headers=alice)).status_code == 409

    hibernating = await client.post(f"/deployments/{deployment_id}/hibernate", headers=alice)
    assert hibernating.status_code == 202
    hibernated = await settle(client, alice, deployment_id)
    assert hibernated["status"] == "hibernated"
    assert not reachable(endpoint)
    again = await client.post(f"/deployments/{deployment_id}/hibernate", headers=alice)
    assert again.status_code == 409

    assert (
        await client.post(f"/deployments/{deployment_id}/activate", headers=alice)
    ).status_code == 202
    reactivated = await settle(client, alice, deployment_id)
    assert reactivated["status"] == "active"
    assert reactivated["endpoint"] == endpoint
    assert infer(endpoint, "tiny-local")["outputs"][0]["name"] == "Y"

    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    kinds = [event["kind"] for event in events]
    assert kinds.count("operation-succeeded") == 3
    assert "ready" in kinds
    assert "stopped" in kinds

    deleted = await client.delete(f"/deployments/{deployment_id}", headers=alice)
    assert deleted.status_code == 202
    assert await settle(client, alice, deployment_id) == {}
    assert not reachable(endpoint)
    assert (await client.delete(f"/models/{model_id}", headers=alice)).status_code == 200


async def test_update_applies_and_validates(
    client: Client, alice: dict[str, str], bob: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    deployment_id = (
        await client.post("/deployments", json=local_body(model_id), headers=alice)
    ).json()["id"]
    await settle(client, alice, deployment_id)

    invalid = await client.put(
        f"/deployments/{deployment_id}",
        json={"scaling_policy": {"min_instances": 3, "max_instances": 1}},
        headers=alice,
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"].startswith("scaling_policy")

    assert (
        await client.put(f"/deployments/{deployment_id}", json={"metadata": {}}, headers=bob)
    ).status_code == 404

    updated = await client.put(
        f"/deployments/{deployment_id}",
        json={"resource_requirements": {"cpu": "2", "memory": "1Gi"}, "metadata": {"k": "v"}},
        headers=alice,
    )
    assert updated.status_code == 202, updated.text
    assert updated.json()["status"] == "updating"
    final = await settle(client, alice, deployment_id)
    assert final["status"] == "active"
    assert final["resource_requirements"]["cpu"] == "2"
    assert final["metadata"] == {"k": "v"}

    await client.delete(f"/deployments/{deployment_id}", headers=alice)
    await settle(client, alice, deployment_id)


async def test_create_validation(client: Client, alice: dict[str, str], upload: Any) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    unknown_model = await client.post("/deployments", json=local_body("nope"), headers=alice)
    assert unknown_model.status_code == 422
    assert unknown_model.json()["errors"][0]["field"] == "model_id"

    bad_name = await client.post(
        "/deployments", json=local_body(model_id, name="Bad_Name"), headers=alice
    )
    assert bad_name.status_code == 422
    assert (
        bad_name.json()["errors"][0]["field"] == "body.name"
        or "name" in bad_name.json()["errors"][0]["field"]
    )

    first = await client.post("/deployments", json=local_body(model_id), headers=alice)
    duplicate = await client.post("/deployments", json=local_body(model_id), headers=alice)
    assert duplicate.status_code == 409
    await settle(client, alice, first.json()["id"])
    await client.delete(f"/deployments/{first.json()['id']}", headers=alice)
    await settle(client, alice, first.json()["id"])


async def test_idle_deployment_hibernates_by_itself(
    client: Client,
    alice: dict[str, str],
    upload: Any,
    runners: RunnerSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_module, "_METRICS_EVERY_SECONDS", 0.1)
    model_id = (await upload(alice)).json()["model_id"]
    body = local_body(
        model_id,
        cost_optimization_policy={"hibernation_enabled": True, "hibernation_idle_timeout": 60},
    )
    deployment_id = (await client.post("/deployments", json=body, headers=alice)).json()["id"]
    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active"
    assert isinstance(runners.local, LocalRunner)
    runners.local._served[deployment_id].idle_timeout = 0.5  # the schema's minimum is 60 s
    deadline = time.monotonic() + 20
    status = "active"
    while status == "active" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        status = (await client.get(f"/deployments/{deployment_id}", headers=alice)).json()["status"]
    assert status == "hibernated"
    assert not reachable(active["endpoint"])
    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    assert events[-1]["kind"] == "hibernated-idle"
    assert (
        await client.post(f"/deployments/{deployment_id}/activate", headers=alice)
    ).status_code == 202
    assert (await settle(client, alice, deployment_id))["status"] == "active"
    await client.delete(f"/deployments/{deployment_id}", headers=alice)
    await settle(client, alice, deployment_id)


async def test_cloud_deployments_need_an_object_store(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    body = local_body(model_id, name="cloudy", target={"cloud": "gcp", "region": "us-central1"})
    response = await client.post("/deployments", json=body, headers=alice)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "target"
    assert "artifact_store_url" in response.json()["detail"]
    assert (await client.get("/deployments", headers=alice)).json() == []


@pytest.mark.slow
async def test_a_torch_export_model_is_served_as_its_conversion_at_upload(
    client: Client, alice: dict[str, str], upload: Any, tmp_path: Path
) -> None:
    import torch

    program = torch.export.export(
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval(),
        (torch.ones(2, 4),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    path = tmp_path / "tiny.pt2"
    torch.export.save(program, str(path))
    uploaded = await upload(alice, path=path, framework="pytorch")
    assert uploaded.status_code == 201, uploaded.text
    model_id = uploaded.json()["model_id"]
    deployment_id = (
        await client.post("/deployments", json=local_body(model_id, name="torchy"), headers=alice)
    ).json()["id"]
    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active", active
    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    assert "converting" not in [event["kind"] for event in events], "converted at upload"
    [model] = (await client.get(f"/models/{model_id}", headers=alice)).json()["metadata"][
        "serving"
    ]["inputs"]
    body = {
        "inputs": [
            {"name": model["name"], "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
        ]
    }
    response = urllib.request.urlopen(
        urllib.request.Request(
            f"{active['endpoint']}/v2/models/torchy/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=10,
    )
    assert json.loads(response.read())["outputs"][0]["shape"] == [1, 3]
    await client.delete(f"/deployments/{deployment_id}", headers=alice)
    await settle(client, alice, deployment_id)


async def test_several_instances_behind_one_endpoint(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    body = local_body(
        model_id,
        name="pair",
        scaling_policy={"min_instances": 1, "max_instances": 2, "target_cpu_utilization": 70},
    )
    deployment_id = (await client.post("/deployments", json=body, headers=alice)).json()["id"]
    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active", active
    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    [ready] = [event for event in events if event["kind"] == "ready"]
    expected = min(2, os.cpu_count() or 1)
    assert len(ready["data"]["pids"]) == expected
    for _ in range(6):  # new connections each time: spread over the instances
        assert infer(active["endpoint"], "pair")["outputs"][0]["shape"] == [1, 3]
    assert (
        await client.post(f"/deployments/{deployment_id}/hibernate", headers=alice)
    ).status_code == 202
    assert (await settle(client, alice, deployment_id))["status"] == "hibernated"
    assert not reachable(active["endpoint"])
    assert (
        await client.post(f"/deployments/{deployment_id}/activate", headers=alice)
    ).status_code == 202
    assert (await settle(client, alice, deployment_id))["status"] == "active"
    assert infer(active["endpoint"], "pair")["outputs"][0]["shape"] == [1, 3]
    await client.delete(f"/deployments/{deployment_id}", headers=alice)
    assert await settle(client, alice, deployment_id) == {}
    assert not reachable(active["endpoint"])


async def test_a_deployment_in_any_status_holds_its_model(
    client: Client, alice: dict[str, str], upload: Any, settings: Settings
) -> None:
    """A failed deployment still has resources to destroy, which needs its model: the model
    cannot be deleted until the deployment is gone."""
    model_id = (await upload(alice)).json()["model_id"]
    deployment_id = (
        await client.post("/deployments", json=local_body(model_id), headers=alice)
    ).json()["id"]
    assert (await settle(client, alice, deployment_id))["status"] == "active"
    database = Database(settings.effective_database_url)
    try:
        async with database.session() as session:
            await session.execute(
                update(DeploymentRow)
                .where(DeploymentRow.id == deployment_id)
                .values(status="failed", status_reason="create failed: for this test")
            )
    finally:
        await database.dispose()

    refused = await client.delete(f"/models/{model_id}", headers=alice)
    assert refused.status_code == 409, refused.text
    assert "used by 1 deployment" in refused.json()["detail"]
    assert (await client.delete(f"/deployments/{deployment_id}", headers=alice)).status_code == 202
    assert await settle(client, alice, deployment_id) == {}
    assert (await client.delete(f"/models/{model_id}", headers=alice)).status_code == 200
