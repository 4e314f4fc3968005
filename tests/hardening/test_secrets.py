"""Secrets never leave: a whole session logged at DEBUG (token, upload, optimization, a cloud
deployment's whole life on the mock engine) shows no password, token, Pulumi passphrase, signing
key or cloud credential in any log line, response or engine event. Security headers on every
answer; CORS off unless configured."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aideploy.settings import Settings
from api.analytics.tokens import usage_token
from api.app import create_app
from api.context import ApiContext
from api.db.engine import Database
from api.runners.base import RunnerSet
from tests.api.conftest import ALICE, Client, Upload
from tests.hardening.test_tenancy import deployment_body, settled

PASSPHRASE = "pulumi-passphrase-7f1c0e"
SIGNING_KEY = "signing-key-4b9d2a-0123456789abcdef0123456789abcdef"
AWS_SECRET = "aws-secret-access-key-93ac11"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-secrets/{uuid.uuid4().hex}",
            "pulumi_passphrase": SecretStr(PASSPHRASE),
            "secret_key": SecretStr(SIGNING_KEY),
            "log_level": "DEBUG",
        }
    )


async def test_a_whole_session_leaks_no_secret(
    client: Client,
    alice: dict[str, str],
    upload: Upload,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    caplog.set_level(logging.DEBUG)
    token = alice["Authorization"].removeprefix("Bearer ")
    answers: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        response = await client.request(method, path, headers=alice, **kwargs)
        answers.append(f"{response.headers}\n{response.text}")
        assert response.status_code < 500, response.text
        return response

    model_id = (await upload(alice)).json()["model_id"]
    await call("POST", f"/models/{model_id}/optimize", json={"method": "graph"})
    deadline = time.monotonic() + 60
    while (await call("GET", f"/models/{model_id}/optimized")).json()[-1]["status"] == "optimizing":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    deployment_id = (await call("POST", "/deployments", json=deployment_body(model_id))).json()[
        "id"
    ]
    for operation in ("hibernate", "activate"):
        await settled(client, alice, deployment_id)
        await call("POST", f"/deployments/{deployment_id}/{operation}")
    await settled(client, alice, deployment_id)
    await call("GET", f"/deployments/{deployment_id}/events")
    await call("PUT", f"/deployments/{deployment_id}", json={"metadata": {"team": "ml"}})
    await settled(client, alice, deployment_id)
    await call("GET", "/analytics/cost")
    await call("DELETE", f"/deployments/{deployment_id}")
    events = ""
    while True:  # the delete's events, until the deployment (and its events) are gone
        response = await call("GET", f"/deployments/{deployment_id}/events")
        if response.status_code == 404:
            break
        events = response.text
        if '"operation-succeeded","message":"delete succeeded"' in events:
            break
        assert time.monotonic() < deadline + 60
        await asyncio.sleep(0.05)
    wrong = await client.post("/auth/token", json={"username": ALICE[0], "password": "nope"})
    answers.append(wrong.text)

    logs = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    assert any(
        record.levelno == logging.DEBUG and record.name.startswith("aideploy.")
        for record in caplog.records
    ), "the API's own DEBUG records were captured"
    assert "aideploy:index:ModelDeployment" in events, "the engine's events were recorded"
    usage = usage_token(SIGNING_KEY.encode(), deployment_id)
    for secret in (ALICE[1], "nope", token, PASSPHRASE, SIGNING_KEY, AWS_SECRET, usage):
        assert secret not in logs
        assert secret not in events
        for answer in answers:
            assert secret not in answer


async def test_every_answer_carries_the_security_headers(
    client: Client, alice: dict[str, str]
) -> None:
    for method, path, headers in (
        ("GET", "/health", {}),
        ("GET", "/models", alice),
        ("GET", "/models/nope", alice),
        ("GET", "/models", {}),
        ("POST", "/deployments", alice),
    ):
        response = await client.request(method, path, headers=headers)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["content-security-policy"].startswith("default-src 'none'"), path
        assert response.headers["cache-control"] == "no-store", path
        assert "access-control-allow-origin" not in response.headers, path


async def preflight(client: Client, origin: str) -> Any:
    return await client.options(
        "/models",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


async def test_cors_is_off_by_default(client: Client) -> None:
    response = await preflight(client, "https://evil.example")
    assert "access-control-allow-origin" not in response.headers


async def test_cors_answers_only_the_configured_origins(
    settings: Settings, runners: RunnerSet, isolated_settings: Path
) -> None:
    configured = settings.model_copy(update={"cors_allowed_origins": ["https://app.example"]})
    async with AsyncTestClient(app=create_app(configured, runners=runners)) as client:
        allowed = await preflight(client, "https://app.example")
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        denied = await preflight(client, "https://evil.example")
        assert denied.headers.get("access-control-allow-origin") != "https://evil.example"
        assert "access-control-allow-credentials" not in denied.headers


async def test_secrets_in_log_records_are_masked(
    client: Client,
    context: ApiContext,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a log call carries (a message, its arguments, a traceback), the API's log
    handler masks it before any handler sees it."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    caplog.set_level(logging.INFO)
    token, _ = context.signer.sign("someone")
    usage = usage_token(SIGNING_KEY.encode(), "deployment")
    log = logging.getLogger("aideploy.api.test")
    log.info("header Authorization: Bearer %s", token)
    log.info("config %s", {"password": "hunter2-password", "passphrase": PASSPHRASE})
    log.info("env %s and %s", AWS_SECRET, usage)
    log.warning("connecting to postgresql://app:db-password-1@db:5432/app failed")
    try:
        raise RuntimeError(f"signing with {SIGNING_KEY} failed")
    except RuntimeError:
        log.exception("unexpected")

    text = "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)
    assert len(caplog.records) == 5
    for secret in (token, usage, "hunter2-password", PASSPHRASE, AWS_SECRET, "db-password-1"):
        assert secret not in text
    assert SIGNING_KEY not in text
    assert "[redacted]" in text
    assert "RuntimeError" in text, "the traceback is kept, masked"


async def test_sql_parameters_never_reach_errors_or_logs(settings: Settings) -> None:
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        with pytest.raises(DBAPIError) as raised:
            async with database.session() as session:
                await session.execute(
                    text("INSERT INTO users (id, username) VALUES (:id, :secret)"),
                    {"id": "x", "secret": "parameter-secret-5d1e"},
                )
    finally:
        await database.dispose()
    assert "parameter-secret-5d1e" not in str(raised.value)
    assert "parameters hidden" in str(raised.value)


async def test_a_failure_reason_quoting_an_exception_is_masked(
    client: Client, alice: dict[str, str], upload: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optimizer

    def leaky(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"cannot reach s3://bucket with passphrase={PASSPHRASE} via "
            "https://user:cloud-password-2@example.com"
        )

    monkeypatch.setattr(optimizer, "optimize", leaky)
    model_id = (await upload(alice)).json()["model_id"]
    await client.post(f"/models/{model_id}/optimize", json={"method": "graph"}, headers=alice)
    deadline = time.monotonic() + 60
    while (rows := (await client.get(f"/models/{model_id}/optimized", headers=alice)).json())[0][
        "status"
    ] == "optimizing":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    reason = rows[0]["status_reason"]
    assert rows[0]["status"] == "failed"
    assert "RuntimeError" in reason
    assert PASSPHRASE not in reason
    assert "cloud-password-2" not in reason
