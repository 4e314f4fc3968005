"""The database going away under a running API, and coming back."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from aideploy.settings import Settings
from api.app import create_app
from api.db import engine
from api.runners.base import RunnerSet
from tests.api.conftest import _bearer
from tests.hardening.proxy import TcpProxy

POSTGRES = ("127.0.0.1", 5432)


def assert_error_shape(body: dict[str, object], status: int) -> None:
    assert body["status_code"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body["errors"], list)


@pytest.mark.postgres
async def test_an_unreachable_database_is_503_and_recovers(
    settings: Settings, runners: RunnerSet, postgres_database: str
) -> None:
    proxy = TcpProxy(POSTGRES)
    proxy.start()
    url = postgres_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    app = create_app(settings.model_copy(update={"database_url": url}), runners=runners)
    try:
        async with AsyncTestClient(app=app) as client:
            admin = await _bearer(client, ("admin", "admin-password"))
            assert (await client.get("/models", headers=admin)).status_code == 200

            proxy.stop()
            for _ in range(3):
                down = await client.get("/models", headers=admin)
                assert down.status_code == 503, down.text
                assert_error_shape(down.json(), 503)
                assert "database" in down.json()["detail"]
            login = await client.post(
                "/auth/token", json={"username": "admin", "password": "admin-password"}
            )
            assert login.status_code == 503, login.text

            proxy.start()
            assert (await client.get("/models", headers=admin)).status_code == 200
            assert (await _bearer(client, ("admin", "admin-password")))["Authorization"]
    finally:
        proxy.stop()


@pytest.mark.postgres
async def test_a_database_that_never_answers_is_503_not_a_hang(
    settings: Settings,
    runners: RunnerSet,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections accepted and never answered (a dead network path, no refusal): the connect
    timeout turns them into 503s, and the API recovers when the database answers again."""
    monkeypatch.setattr(engine, "_CONNECT_TIMEOUT_SECONDS", 1)
    proxy = TcpProxy(POSTGRES)
    proxy.start()
    url = postgres_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    app = create_app(settings.model_copy(update={"database_url": url}), runners=runners)
    try:
        async with AsyncTestClient(app=app) as client:
            admin = await _bearer(client, ("admin", "admin-password"))
            proxy.stop()
            proxy.start(black_hole=True)
            down = await client.get("/models", headers=admin)
            assert down.status_code == 503, down.text
            assert_error_shape(down.json(), 503)
            proxy.stop()
            proxy.start()
            assert (await client.get("/models", headers=admin)).status_code == 200
    finally:
        proxy.stop()
