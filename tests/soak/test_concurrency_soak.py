"""50 concurrent clients on PostgreSQL for two minutes; then everything is checked against what
the clients were told (see ``tests/hardening/concurrency.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aideploy.settings import Settings
from api.context import ApiContext
from tests.api.conftest import Client
from tests.hardening.concurrency import check_consistency, run_clients
from tests.hardening.test_concurrency import (  # the mock cloud engine's settings
    POSTGRES_ONLY,
    assert_jobs_final,
    settings,
)

__all__ = ["settings"]

pytestmark = [pytest.mark.soak, pytest.mark.postgres, POSTGRES_ONLY, pytest.mark.timeout(600)]

CLIENTS = 50
SECONDS = 120.0


async def test_fifty_clients_for_two_minutes_lose_nothing(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    onnx_model: Path,
    settings: Settings,
) -> None:
    started = time.monotonic()
    ledger = await run_clients(client, alice, onnx_model, CLIENTS, SECONDS)

    print(
        f"\nconcurrency: {CLIENTS} clients, {SECONDS:.0f} s, {ledger.requests} requests "
        f"({ledger.requests / (time.monotonic() - started):.1f}/s); {dict(ledger.answers)}"
    )
    await check_consistency(client, alice, ledger, context.store)
    await assert_jobs_final(settings)
    assert ledger.answers[("update", 409)] > 0
