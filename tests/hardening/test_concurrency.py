"""50 concurrent clients on PostgreSQL for a few seconds (the long run is in ``tests/soak``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from aideploy.settings import Settings
from api.db.engine import Database
from api.db.tables import JobRow
from tests.api.conftest import Client
from tests.hardening.concurrency import FINAL_JOB_STATES, check_consistency, run_clients

CLIENTS = 50
SECONDS = 6.0


@pytest.fixture
def database_url(postgres_database: str) -> str:
    """PostgreSQL only: row locks and concurrent transactions are the point here."""
    return postgres_database


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


@pytest.mark.postgres
async def test_fifty_clients_lose_nothing(
    client: Client, alice: dict[str, str], onnx_model: Path, settings: Settings
) -> None:
    ledger = await run_clients(client, alice, onnx_model, CLIENTS, SECONDS)

    print(f"\n{CLIENTS} clients, {SECONDS} s: {ledger.requests} requests; {dict(ledger.answers)}")
    await check_consistency(client, alice, ledger)
    await assert_jobs_final(settings)
    assert ledger.answers[("update", 409)] > 0, "operations on one deployment collided"
    assert ledger.answers[("update", 202)] > 0
