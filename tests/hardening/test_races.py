"""Check-then-write races, replayed deterministically with two database sessions on SQLite and
PostgreSQL: a model cannot be deleted under a deployment being created (nor the other way
round), and an update computed from a stale read of a deployment is refused (409) instead of
silently undoing the update that came between."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from aideploy.schema import DeploymentUpdate, ModelType
from aideploy.settings import Settings
from api.context import ApiContext
from api.db.engine import Database
from api.db.tables import DeploymentRow, UserRow
from api.deployments import service as deployments
from api.errors import ConflictError, InvalidFieldError
from api.models import service as models
from tests.api.conftest import Client, Upload
from tests.hardening.test_tenancy import deployment_body, settled

# While one session holds the lock, the other must still be waiting after this long.
BLOCKED_SECONDS = 0.5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Deployments on the mock cloud engine: an object store and an image, no processes."""
    return settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-races/{time.time_ns()}",
        }
    )


@pytest.fixture
async def database(settings: Settings, client: Client) -> AsyncIterator[Database]:
    """Sessions of the test's own, on the app's database (the app has migrated it)."""
    database = Database(settings.effective_database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def alice_id(database: Database) -> str:
    async with database.sessions() as session:
        found = await session.scalar(select(UserRow.id).where(UserRow.username == "alice"))
    assert found is not None
    return found


def deployment_row(owner_id: str, model_id: str, name: str) -> DeploymentRow:
    return DeploymentRow(
        owner_id=owner_id,
        name=name,
        model_id=model_id,
        model_type="original",
        deployment_type="kubernetes",
        status="failed",
        spec={},
    )


async def test_a_model_is_not_deleted_under_a_deployment_being_created(
    client: Client,
    context: ApiContext,
    database: Database,
    alice: dict[str, str],
    upload: Upload,
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    owner = await alice_id(database)

    async with database.session() as creating:
        await deployments.hold_served_model(creating, owner, model_id, ModelType.ORIGINAL)
        creating.add(deployment_row(owner, model_id, "racer"))
        await creating.flush()

        async def delete() -> None:
            async with database.session() as deleting:
                await models.delete_model(
                    deleting, context.store, context.settings.data_dir, owner, model_id
                )

        deleting = asyncio.create_task(delete())
        await asyncio.sleep(BLOCKED_SECONDS)
        assert not deleting.done(), "the delete waits for the creating transaction"
    # The create committed: the delete now sees its deployment (a failed one, even).
    with pytest.raises(ConflictError, match="used by 1 deployment"):
        await deleting
    assert (await client.get(f"/models/{model_id}", headers=alice)).status_code == 200


async def test_a_deployment_is_not_created_for_a_model_being_deleted(
    client: Client,
    context: ApiContext,
    database: Database,
    alice: dict[str, str],
    upload: Upload,
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    owner = await alice_id(database)

    async def create() -> None:
        async with database.session() as creating:
            await deployments.hold_served_model(creating, owner, model_id, ModelType.ORIGINAL)
            creating.add(deployment_row(owner, model_id, "late"))

    async with database.session() as deleting:
        # The delete checks, deletes, then waits here before its commit, holding the lock.
        commit, release = deleting.commit, asyncio.Event()

        async def commit_once_released() -> None:
            await release.wait()
            await commit()

        deleting.commit = commit_once_released  # type: ignore[method-assign]
        deleted = asyncio.create_task(
            models.delete_model(deleting, context.store, context.settings.data_dir, owner, model_id)
        )
        await asyncio.sleep(BLOCKED_SECONDS)
        assert not deleted.done()
        creating = asyncio.create_task(create())
        await asyncio.sleep(BLOCKED_SECONDS)
        assert not creating.done(), "the create waits for the deleting transaction"
        release.set()
        await deleted
    with pytest.raises(InvalidFieldError, match="not found"):
        await creating
    assert (await client.get("/deployments", headers=alice)).json() == []


async def test_an_update_from_a_stale_read_is_refused(
    client: Client,
    context: ApiContext,
    database: Database,
    alice: dict[str, str],
    upload: Upload,
) -> None:
    """The ABA case: B reads the deployment, A's whole update runs (updating, then active
    again), then B writes. The status is the same as B read it; the version is not."""
    model_id = (await upload(alice)).json()["model_id"]
    created = await client.post("/deployments", json=deployment_body(model_id), headers=alice)
    deployment_id = created.json()["id"]
    await settled(client, alice, deployment_id)
    owner = await alice_id(database)

    async with database.session() as late:
        stale = await deployments.get_deployment(late, owner, deployment_id)
        changes = deployments.updated_spec(stale, DeploymentUpdate(metadata={"writer": "late"}))

        scaling = {"min_instances": 1, "max_instances": 4, "target_cpu_utilization": 55}
        first = await client.put(
            f"/deployments/{deployment_id}", json={"scaling_policy": scaling}, headers=alice
        )
        assert first.status_code == 202, first.text
        assert (await settled(client, alice, deployment_id))["status"] == "active"

        with pytest.raises(ConflictError, match="changed since it was read"):
            await deployments.start_operation(
                late, context, stale, deployments.Operation.UPDATE, changes
            )

    final: dict[str, Any] = (
        await client.get(f"/deployments/{deployment_id}", headers=alice)
    ).json()
    assert final["scaling_policy"] == scaling, "the first update holds"
    assert final["metadata"] == {}
