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

from aideploy.settings import Settings
from api.app import create_app
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
    wrong = await client.post("/auth/token", json={"username": ALICE[0], "password": "nope"})
    answers.append(wrong.text)

    events = (await call("GET", f"/deployments/{deployment_id}/events")).text
    logs = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    assert any(record.levelno == logging.DEBUG for record in caplog.records), "DEBUG was on"
    assert "aideploy:index:ModelDeployment" in events, "the engine's events were recorded"
    for secret in (ALICE[1], "nope", token, PASSPHRASE, SIGNING_KEY, AWS_SECRET):
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
