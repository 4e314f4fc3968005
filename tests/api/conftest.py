"""Fixtures for the HTTP API: the app on SQLite and on PostgreSQL, users, tokens, tiny models."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import onnx
import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import AsyncTestClient
from onnx import TensorProto, helper

from aideploy.settings import ENV_PREFIX, Settings
from api.app import create_app
from api.auth import service as auth_service
from api.auth.service import create_user
from api.context import ApiContext
from api.db.engine import Database
from api.runners.base import RunnerSet
from api.runners.local import LocalRunner
from api.runners.mock import MockEngineRunner

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = ("admin", "admin-password")
ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password-1")

Client = AsyncTestClient[Litestar]


REDIS_URL = "redis://127.0.0.1:6379/0"


def _postgres_admin_url() -> str:
    return os.environ.get(f"{ENV_PREFIX}TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)


def service_missing(what: str) -> NoReturn:
    """A service the suite needs is unreachable: a skip on a developer's machine, a failure in
    CI (``CI=true``), where a skip would let a run that tested nothing pass."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: the service must be there)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of the tests (``AIDEPLOY_TEST_REDIS_URL``), checked reachable."""
    redis = pytest.importorskip("redis")
    url = os.environ.get(f"{ENV_PREFIX}TEST_REDIS_URL", REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis not reachable at {url}: {exc}")
    return url


@pytest.fixture(autouse=True)
def fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2, with the smallest cost parameters: the suite hashes hundreds of times."""
    monkeypatch.setattr(
        auth_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    asyncpg = pytest.importorskip("asyncpg")
    admin_url = _postgres_admin_url()
    name = f"aideploy_test_{uuid.uuid4().hex[:12]}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(run(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing(f"PostgreSQL not reachable at {admin_url}: {exc}")
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` (the default SQLite file in the data dir) or the session's PostgreSQL database,
    emptied after each test (every table but the migration version)."""
    if request.param == "sqlite":
        yield None
        return
    url: str = request.getfixturevalue("postgres_database")
    yield url
    asyncpg = pytest.importorskip("asyncpg")

    async def truncate() -> None:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
            if tables:
                names = ", ".join(f'"{table["tablename"]}"' for table in tables)
                await connection.execute(f"TRUNCATE {names} CASCADE")
        finally:
            await connection.close()

    asyncio.run(truncate())


@pytest.fixture
def settings(isolated_settings: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=isolated_settings,
        database_url=database_url,
        admin_username=ADMIN[0],
        admin_password=ADMIN[1],
        max_upload_bytes=1024 * 1024,
    )


@pytest.fixture
def runners(settings: Settings) -> RunnerSet:
    """The real local runner, and the mock engine for the clouds (no Pulumi CLI here)."""
    return RunnerSet(local=LocalRunner(settings), cloud=MockEngineRunner(settings))


@pytest.fixture
async def api(settings: Settings, runners: RunnerSet) -> AsyncIterator[tuple[Client, ApiContext]]:
    app = create_app(settings, runners=runners)
    async with AsyncTestClient(app=app) as client:
        # The app runs on the test client's own event loop: set up through a separate engine.
        database = Database(settings.effective_database_url)
        try:
            async with database.session() as session:
                for username, password in (ALICE, BOB):
                    await create_user(session, username, password)
        finally:
            await database.dispose()
        yield client, app.state.context


@pytest.fixture
def client(api: tuple[Client, ApiContext]) -> Client:
    return api[0]


@pytest.fixture
def context(api: tuple[Client, ApiContext]) -> ApiContext:
    return api[1]


async def _bearer(client: Client, user: tuple[str, str]) -> dict[str, str]:
    response = await client.post("/auth/token", json={"username": user[0], "password": user[1]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
def alice_password() -> str:
    return ALICE[1]


@pytest.fixture
async def alice(client: Client) -> dict[str, str]:
    """Alice's authorization header."""
    return await _bearer(client, ALICE)


@pytest.fixture
async def bob(client: Client) -> dict[str, str]:
    """Bob's authorization header."""
    return await _bearer(client, BOB)


def build_onnx_model(path: Path, inputs: int = 4, outputs: int = 3) -> Path:
    """A tiny ``Y = X @ W + B`` ONNX model with a dynamic batch axis."""
    weight = helper.make_tensor(
        "W", TensorProto.FLOAT, [inputs, outputs], [0.1 * i for i in range(inputs * outputs)]
    )
    bias = helper.make_tensor("B", TensorProto.FLOAT, [outputs], [0.5] * outputs)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    return build_onnx_model(tmp_path / "tiny.onnx")


Upload = Callable[..., Awaitable[Any]]


@pytest.fixture
def upload(client: Client, onnx_model: Path) -> Upload:
    """Upload ``onnx_model`` (or ``path``) as the given user; returns the response."""

    async def send(
        headers: dict[str, str],
        path: Path | None = None,
        **fields: str,
    ) -> Any:
        form = {"name": "tiny", "framework": "onnx", "version": "1.0", **fields}
        source = path or onnx_model
        return await client.post(
            "/models",
            data=form,
            files={"file": (source.name, source.read_bytes(), "application/octet-stream")},
            headers=headers,
        )

    return send
