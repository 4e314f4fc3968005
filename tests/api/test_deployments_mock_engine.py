"""Cloud deployments through the same ``stacks`` program under Pulumi's mock engine: status
transitions, conflicts, recorded engine events and failure reasons."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import delete

from aideploy.settings import Settings
from api.db.engine import Database
from api.db.tables import ModelRow

Client = AsyncTestClient[Litestar]
BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Cloud deployments need an object store: fsspec's in-memory one stands in for S3."""
    return settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-tests/{uuid.uuid4().hex}",
        }
    )


async def settle(client: Client, headers: dict[str, str], deployment_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = await client.get(f"/deployments/{deployment_id}", headers=headers)
        if response.status_code == 404:
            return {}
        body: dict[str, Any] = response.json()
        if body["status"] not in BUSY:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"deployment {deployment_id} still busy")


def cloud_body(model_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "on-aws",
        "model_id": model_id,
        "model_type": "original",
        "deployment_type": "kubernetes",
        "resource_requirements": {"cpu": "1", "memory": "2Gi", "gpu": None, "timeout": 30},
        "scaling_policy": {"min_instances": 1, "max_instances": 5, "target_cpu_utilization": 70},
        "cost_optimization_policy": {
            "use_spot_instances": True,
            "hibernation_enabled": True,
            "hibernation_idle_timeout": 1800,
            "multi_cloud_enabled": False,
        },
        "target": {"cloud": "aws", "region": "us-east-1"},
        "metadata": {},
        **overrides,
    }


async def test_status_transitions_and_events(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    created = await client.post("/deployments", json=cloud_body(model_id), headers=alice)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["id"]
    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active", active
    assert active["target"] == {"cloud": "aws", "region": "us-east-1", "cluster": None}

    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    messages = [event["message"] for event in events]
    assert any("aideploy:index:ModelDeployment" in message for message in messages)
    assert events[-1]["kind"] == "operation-succeeded"

    conflict = await client.post(f"/deployments/{deployment_id}/activate", headers=alice)
    assert conflict.status_code == 409
    assert "while it is active" in conflict.json()["detail"]

    for operation, expected in (("hibernate", "hibernated"), ("activate", "active")):
        response = await client.post(f"/deployments/{deployment_id}/{operation}", headers=alice)
        assert response.status_code == 202
        assert (await settle(client, alice, deployment_id))["status"] == expected

    updated = await client.put(
        f"/deployments/{deployment_id}",
        json={
            "scaling_policy": {
                "min_instances": 2,
                "max_instances": 10,
                "target_cpu_utilization": 80,
            }
        },
        headers=alice,
    )
    assert updated.status_code == 202
    assert (await settle(client, alice, deployment_id))["scaling_policy"]["max_instances"] == 10

    operations = {
        event["operation_id"]
        for event in (
            await client.get(f"/deployments/{deployment_id}/events", headers=alice)
        ).json()
    }
    assert len(operations) == 4  # create, hibernate, activate, update

    assert (await client.delete(f"/deployments/{deployment_id}", headers=alice)).status_code == 202
    assert await settle(client, alice, deployment_id) == {}


async def test_program_errors_fail_the_deployment_with_the_reason(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    body = cloud_body(model_id, name="lambda", deployment_type="serverless")
    deployment_id = (await client.post("/deployments", json=body, headers=alice)).json()["id"]
    failed = await settle(client, alice, deployment_id)
    assert failed["status"] == "failed"
    assert failed["status_reason"].startswith("create failed: ")
    assert "Amazon ECR image" in failed["status_reason"]

    conflict = await client.post(f"/deployments/{deployment_id}/hibernate", headers=alice)
    assert conflict.status_code == 409
    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    assert events[-1]["kind"] == "operation-failed"

    # A failed deployment can be deleted (nothing to destroy under the mock engine).
    assert (await client.delete(f"/deployments/{deployment_id}", headers=alice)).status_code == 202
    assert await settle(client, alice, deployment_id) == {}


async def test_another_users_deployment_is_404(
    client: Client, alice: dict[str, str], bob: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    deployment_id = (
        await client.post("/deployments", json=cloud_body(model_id), headers=alice)
    ).json()["id"]
    await settle(client, alice, deployment_id)
    for method, path in (
        ("GET", f"/deployments/{deployment_id}"),
        ("DELETE", f"/deployments/{deployment_id}"),
        ("POST", f"/deployments/{deployment_id}/hibernate"),
        ("GET", f"/deployments/{deployment_id}/events"),
    ):
        assert (await client.request(method, path, headers=bob)).status_code == 404, path
    assert (await client.get("/deployments", headers=bob)).json() == []
    # Bob cannot deploy Alice's model either.
    stolen = await client.post("/deployments", json=cloud_body(model_id), headers=bob)
    assert stolen.status_code == 422


async def test_multi_cloud_without_target_is_placed_by_the_program(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    body = cloud_body(model_id, name="anywhere", deployment_type="serverless")
    del body["target"]
    body["cost_optimization_policy"]["multi_cloud_enabled"] = True
    created = await client.post("/deployments", json=body, headers=alice)
    assert created.status_code == 202, created.text
    assert created.json()["target"] is None
    final = await settle(client, alice, created.json()["id"])
    # The program tried every catalogued cloud and region (none takes a memory:// model).
    assert final["status"] == "failed"
    assert "no catalogued cloud can run this deployment" in final["status_reason"]
    assert "aws/us-east-1" in final["status_reason"]


async def test_a_deployment_whose_model_is_gone_is_still_destroyed(
    client: Client, alice: dict[str, str], upload: Any, settings: Settings
) -> None:
    """Destroying builds the program without the model (the mock engine builds it exactly as
    the Automation API runner does for ``pulumi destroy``)."""
    model_id = (await upload(alice)).json()["model_id"]
    deployment_id = (
        await client.post("/deployments", json=cloud_body(model_id), headers=alice)
    ).json()["id"]
    assert (await settle(client, alice, deployment_id))["status"] == "active"
    database = Database(settings.effective_database_url)  # the app runs on its own loop
    try:
        async with database.session() as session:
            await session.execute(delete(ModelRow).where(ModelRow.id == model_id))
    finally:
        await database.dispose()

    assert (await client.delete(f"/deployments/{deployment_id}", headers=alice)).status_code == 202
    assert await settle(client, alice, deployment_id) == {}
