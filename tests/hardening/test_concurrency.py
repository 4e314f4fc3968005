"""50 concurrent clients on PostgreSQL for a few seconds (the long run is in ``tests/soak``)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from aideploy.settings import Settings
from api.context import ApiContext
from api.db.engine import Database
from api.db.tables import JobRow
from tests.api.conftest import Client
from tests.hardening.concurrency import (
    FINAL_JOB_STATES,
    check_consistency,
    deployment_body,
    run_clients,
    settle_all,
)

CLIENTS = 50
SECONDS = 6.0
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
"""Row locks and concurrent transactions are the point here: PostgreSQL, emptied after each."""
pytestmark = [pytest.mark.postgres, POSTGRES_ONLY]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-concurrency/{uuid.uuid4().hex}",
        }
    )


async def assert_jobs_final(settings: Settings) -> None:
    """Every job in the database ended (through an engine of its own, off the app's loop)."""
    database = Database(settings.effective_database_url)
    try:
        async with database.session() as session:
            states = set(await session.scalars(select(JobRow.status).distinct()))
    finally:
        await database.dispose()
    assert states <= FINAL_JOB_STATES, states


async def test_fifty_clients_lose_nothing(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    onnx_model: Path,
    settings: Settings,
) -> None:
    ledger = await run_clients(client, alice, onnx_model, CLIENTS, SECONDS)

    print(f"\n{CLIENTS} clients, {SECONDS} s: {ledger.requests} requests; {dict(ledger.answers)}")
    await check_consistency(client, alice, ledger, context.store)
    await assert_jobs_final(settings)
    assert ledger.answers[("update", 409)] > 0, "operations on one deployment collided"
    assert ledger.answers[("update", 202)] > 0


async def test_simultaneous_updates_of_one_deployment_never_overlap(
    client: Client, alice: dict[str, str], onnx_model: Path
) -> None:
    """Twenty updates sent at once: those arriving while another runs are 409; the accepted ones
    ran one after the other (their engine events do not interleave) and the last one holds."""
    model = await client.post(
        "/models",
        data={"name": "one", "framework": "onnx", "version": "1.0"},
        files={"file": ("tiny.onnx", onnx_model.read_bytes(), "application/octet-stream")},
        headers=alice,
    )
    body = deployment_body(model.json()["model_id"], "contended", "creator")
    deployment_id = (await client.post("/deployments", json=body, headers=alice)).json()["id"]
    await settle_all(client, alice, [deployment_id])

    answers = await asyncio.gather(
        *(
            client.put(
                f"/deployments/{deployment_id}",
                json={"metadata": {"writer": f"w{n}"}},
                headers=alice,
            )
            for n in range(20)
        )
    )
    await settle_all(client, alice, [deployment_id])

    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) == {202, 409}, statuses
    accepted = [answer.json() for answer in answers if answer.status_code == 202]
    last = max(accepted, key=lambda deployment: deployment["updated_at"])
    after = (await client.get(f"/deployments/{deployment_id}", headers=alice)).json()
    assert after["metadata"] == last["metadata"]
    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    running: str | None = None
    for event in events:
        if event["kind"] == "operation-started":
            assert running is None, f"{event['operation_id']} started while {running} ran"
            running = event["operation_id"]
        elif event["kind"] in {"operation-succeeded", "operation-failed"}:
            assert running == event["operation_id"]
            running = None
    started = sum(event["kind"] == "operation-started" for event in events)
    assert started == 1 + statuses[202], "the create and every accepted update ran once"
