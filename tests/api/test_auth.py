"""Tokens, 401s, the login rate limit, security headers and the error shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from aideploy.settings import Settings
from api.app import create_app
from api.auth import ratelimit
from api.auth.tokens import TokenSigner, load_signing_key

Client = AsyncTestClient[Litestar]


async def test_token_is_issued_for_valid_credentials(client: Client, alice_password: str) -> None:
    response = await client.post(
        "/auth/token", json={"username": "alice", "password": alice_password}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expires_at"}
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)


async def test_bootstrap_admin_can_log_in(client: Client) -> None:
    response = await client.post(
        "/auth/token", json={"username": "admin", "password": "admin-password"}
    )
    assert response.status_code == 200


async def test_wrong_password_is_401_with_the_error_shape(client: Client) -> None:
    response = await client.post("/auth/token", json={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    assert response.json() == {
        "status_code": 401,
        "detail": "invalid username or password",
        "errors": [],
    }


async def test_missing_field_is_422_naming_it(client: Client) -> None:
    response = await client.post("/auth/token", json={"username": "alice"})
    assert response.status_code == 422
    body = response.json()
    assert body["status_code"] == 422
    assert any("password" in error["field"] for error in body["errors"])


async def test_endpoints_need_a_bearer_token(client: Client) -> None:
    for path in ("/models", "/deployments"):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bearer" in response.json()["detail"]
    garbage = await client.get("/models", headers={"Authorization": "Bearer abc.def"})
    assert garbage.status_code == 401


async def test_expired_and_forged_tokens_are_401(client: Client, settings: Settings) -> None:
    expired_signer = TokenSigner(load_signing_key(settings), ttl_seconds=-1)
    token, _ = expired_signer.sign("some-user")
    response = await client.get("/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    forged = TokenSigner(b"another key", ttl_seconds=600).sign("some-user")[0]
    response = await client.get("/models", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


async def test_login_attempts_are_rate_limited(client: Client) -> None:
    for _ in range(10):
        response = await client.post("/auth/token", json={"username": "bob", "password": "x"})
        assert response.status_code == 401
    response = await client.post("/auth/token", json={"username": "bob", "password": "x"})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1


async def test_signing_key_is_generated_once_with_mode_0600(settings: Settings) -> None:
    key = load_signing_key(settings)
    path = settings.data_dir / "secret_key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signing_key(settings) == key


async def test_security_headers_and_schema(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/auth/token", "/models", "/models/{model_id}", "/models/{model_id}/optimize",
                 "/models/{model_id}/optimized", "/deployments", "/deployments/{deployment_id}",
                 "/deployments/{deployment_id}/hibernate", "/deployments/{deployment_id}/activate"):  # fmt: skip
        assert path in paths, path
    assert response.headers["x-content-type-options"] == "nosniff"
    error = await client.get("/models")
    assert error.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in error.headers["content-security-policy"]


def test_rate_limiter_forgets_expired_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "_PRUNE_ABOVE_KEYS", 2)
    limiter = ratelimit.LoginRateLimiter(max_attempts=1, window_seconds=0.05)
    limiter.record_failure("user:a", "ip:1")
    assert limiter.retry_after("user:a") >= 1
    time.sleep(0.06)
    limiter.record_failure("user:b", "ip:2")  # two stale keys are over the limit: pruned
    assert set(limiter._attempts) == {"user:b", "ip:2"}
    assert limiter.retry_after("user:a") == 0


async def test_admins_create_users_others_get_403(client: Client, alice: dict[str, str]) -> None:
    admin_token = await client.post(
        "/auth/token", json={"username": "admin", "password": "admin-password"}
    )
    admin = {"Authorization": f"Bearer {admin_token.json()['token']}"}
    body = {"username": "carol", "password": "carol-password"}
    created = await client.post("/auth/users", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["username"] == "carol"
    assert created.json()["is_admin"] is False
    assert (await client.post("/auth/users", json=body, headers=admin)).status_code == 409
    forbidden = await client.post("/auth/users", json={**body, "username": "dave"}, headers=alice)
    assert forbidden.status_code == 403
    assert forbidden.json()["detail"] == "only administrators create users"
    short = await client.post("/auth/users", json={"username": "x", "password": "1"}, headers=admin)
    assert short.status_code == 422
    login = await client.post("/auth/token", json=body)
    assert login.status_code == 200


async def test_cors_is_off_unless_origins_are_configured(
    client: Client, settings: Settings
) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    response = await client.options("/models", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    allowed = settings.model_copy(update={"cors_allowed_origins": ["https://app.example.com"]})
    async with AsyncTestClient(app=create_app(allowed, runners=None)) as cors_client:
        response = await cors_client.options("/models", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
