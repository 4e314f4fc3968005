"""Tokens, 401s, the login rate limit, security headers and the error shape."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, Literal, cast

import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from aideploy.settings import Settings
from api.app import create_app
from api.auth import ratelimit
from api.auth import service as auth_service
from api.auth.tokens import TokenSigner, load_signing_key
from api.runners.base import RunnerSet
from api.runners.local import LocalRunner
from api.runners.mock import MockEngineRunner

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


def from_address(app: ASGIApp) -> ASGIApp:
    """The app, seeing each request come from the address in its ``X-Test-Client`` header."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = dict(scope["headers"])
            if b"x-test-client" in headers:
                address = (headers[b"x-test-client"].decode(), 40000)
                scope = cast("Scope", {**scope, "client": address})
        await app(scope, receive, send)

    return asgi


async def test_an_attacker_cannot_lock_a_user_out(
    settings: Settings, api: Any, alice_password: str
) -> None:
    """Failures on Alice's name from the attacker's address throttle that address only; the
    attacker's address is also limited across names (password spraying)."""
    runners = RunnerSet(local=LocalRunner(settings), cloud=MockEngineRunner(settings))
    app = from_address(create_app(settings, runners=runners))
    async with AsyncTestClient(app=app) as client:

        async def login(username: str, password: str, address: str) -> int:
            response = await client.post(
                "/auth/token",
                json={"username": username, "password": password},
                headers={"X-Test-Client": address},
            )
            return response.status_code

        attacker, alice_home = "203.0.113.9", "198.51.100.7"
        assert [await login("alice", "guess", attacker) for _ in range(10)] == [401] * 10
        assert await login("alice", alice_password, attacker) == 429
        assert await login("alice", alice_password, alice_home) == 200
        # Spraying: the attacker's address runs out across names too.
        statuses = [await login(f"user{n}", "guess", attacker) for n in range(45)]
        assert statuses[:40] == [401] * 40
        assert set(statuses[40:]) == {429}
        assert await login("bob", "bob-password-1", alice_home) == 200


def test_attempts_count_before_the_check_and_success_gives_them_back() -> None:
    limiter = ratelimit.LoginRateLimiter(max_per_account=2, max_per_address=3)
    limiter.record_attempt("alice", "a")  # two guesses in flight at once
    limiter.record_attempt("alice", "a")
    assert limiter.retry_after("alice", "a") >= 1, "a third concurrent guess waits"
    limiter.succeeded("alice", "a")
    assert limiter.retry_after("alice", "a") == 0, "the right password clears the account"
    limiter.record_attempt("bob", "a")
    limiter.take_back("bob", "a")  # the check could not run (database down): not counted
    limiter.record_attempt("carol", "a")
    assert limiter.retry_after("dave", "a") == 0
    limiter.record_attempt("dave", "a")
    assert limiter.retry_after("erin", "a") >= 1, "three attempts from the address"


async def test_password_hashing_runs_off_the_event_loop(
    client: Client, alice_password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop: list[bool] = []

    class Recording(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            on_loop.append(_has_running_loop())
            return super().verify(hash, password)

        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            on_loop.append(_has_running_loop())
            return super().hash(password, salt=salt)

    monkeypatch.setattr(
        auth_service, "_hasher", Recording(time_cost=1, memory_cost=1024, parallelism=1)
    )
    assert (
        await client.post("/auth/token", json={"username": "alice", "password": alice_password})
    ).status_code == 200
    assert (
        await client.post("/auth/token", json={"username": "alice", "password": "wrong"})
    ).status_code == 401
    admin = await client.post(
        "/auth/token", json={"username": "admin", "password": "admin-password"}
    )
    created = await client.post(
        "/auth/users",
        json={"username": "carol", "password": "carol-password"},
        headers={"Authorization": f"Bearer {admin.json()['token']}"},
    )
    assert created.status_code == 201
    assert len(on_loop) == 4
    assert not any(on_loop), "argon2 ran on the event loop's thread"


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_a_token_with_non_ascii_characters_is_401(client: Client) -> None:
    response = await client.get("/models", headers=[(b"authorization", b"Bearer abc.d\xe9f")])
    assert response.status_code == 401, response.text


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
    limiter = ratelimit.LoginRateLimiter(max_per_account=1, window_seconds=0.05)
    limiter.record_attempt("a", "1")
    assert limiter.retry_after("a", "1") >= 1
    time.sleep(0.06)
    limiter.record_attempt("b", "2")  # two stale keys are over the limit: pruned
    assert set(limiter._attempts) == {("account", "b", "2"), ("address", "2")}
    assert limiter.retry_after("a", "1") == 0


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
