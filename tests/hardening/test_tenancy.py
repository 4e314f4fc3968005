"""A second user reaches nothing of the first user's through any route: every route of the app is
listed here (a new route fails the coverage test until it is), each is called as Bob with Alice's
ids, and Bob gets a 404 (never 403) or his own, empty, view; Alice's resources stay as they were."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from aideploy.settings import Settings
from api.analytics.tokens import usage_token
from api.auth.tokens import load_signing_key
from api.context import ApiContext
from tests.api.conftest import Client, Upload

BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Alice's deployment runs on the mock cloud engine: it needs an object store and image."""
    return settings.model_copy(
        update={
            "serving_image": "registry.example.com/aideploy/serving:1",
            "artifact_store_url": f"memory://aideploy-tenancy/{id(settings)}-{time.time_ns()}",
        }
    )


def deployment_body(model_id: str) -> dict[str, Any]:
    return {
        "name": "alice-endpoint",
        "model_id": model_id,
        "model_type": "original",
        "deployment_type": "kubernetes",
        "resource_requirements": {"cpu": "1", "memory": "2Gi", "gpu": None, "timeout": 30},
        "scaling_policy": {"min_instances": 1, "max_instances": 2, "target_cpu_utilization": 70},
        "cost_optimization_policy": {
            "use_spot_instances": False,
            "hibernation_enabled": False,
            "hibernation_idle_timeout": 1800,
            "multi_cloud_enabled": False,
        },
        "target": {"cloud": "aws", "region": "us-east-1"},
        "metadata": {},
    }


async def settled(client: Client, headers: dict[str, str], deployment_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = (
            await client.get(f"/deployments/{deployment_id}", headers=headers)
        ).json()
        if body["status"] not in BUSY:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"deployment {deployment_id} still busy")


def app_routes(app: Litestar) -> set[tuple[str, str]]:
    """(method, path template) of every HTTP route the app serves (HEAD/OPTIONS and the OpenAPI
    document's pages aside)."""
    assert app.openapi_config is not None
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute) and not route.path.startswith(str(app.openapi_config.path))
        for method in route.methods
        if method not in {"HEAD", "OPTIONS"}
    }


# Routes that involve no user's resources: no tenancy question to ask.
PUBLIC = {("GET", "/health"), ("POST", "/auth/token")}
# Routes where Bob legitimately acts on his own account; checked for leaking Alice's data.
OWN = {
    ("POST", "/auth/users"),  # admins only: Bob gets 403 for his role, not for Alice's data
    ("POST", "/models"),
    ("GET", "/models"),
    ("GET", "/deployments"),
    ("POST", "/deployments"),
    ("GET", "/analytics/cost"),
    ("GET", "/analytics/performance"),
    ("GET", "/analytics/forecast"),
    ("GET", "/analytics/suggestions"),
}
# Routes addressing one resource by id in the path: Alice's id must be a 404 for Bob.
BY_ID = {
    ("GET", "/models/{model_id:str}"),
    ("DELETE", "/models/{model_id:str}"),
    ("GET", "/models/{model_id:str}/optimized"),
    ("POST", "/models/{model_id:str}/optimize"),
    ("GET", "/deployments/{deployment_id:str}"),
    ("PUT", "/deployments/{deployment_id:str}"),
    ("DELETE", "/deployments/{deployment_id:str}"),
    ("POST", "/deployments/{deployment_id:str}/hibernate"),
    ("POST", "/deployments/{deployment_id:str}/activate"),
    ("GET", "/deployments/{deployment_id:str}/events"),
    # Authenticated by the deployment's own usage token, not a user's: Bob's token is a 401.
    ("POST", "/deployments/{deployment_id:str}/usage"),
}


def test_every_route_has_a_tenancy_rule(context: ApiContext, client: Client) -> None:
    routes = app_routes(client.app)
    assert routes == PUBLIC | OWN | BY_ID, "classify the new route in this test"


async def test_bob_reaches_nothing_of_alices(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    bob: dict[str, str],
    upload: Upload,
) -> None:
    model = (await upload(alice, name="alice-secret-model")).json()
    model_id = model["model_id"]
    optimizing = await client.post(
        f"/models/{model_id}/optimize", json={"method": "graph"}, headers=alice
    )
    assert optimizing.status_code == 202, optimizing.text
    created = await client.post("/deployments", json=deployment_body(model_id), headers=alice)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["id"]
    before = await settled(client, alice, deployment_id)
    assert before["status"] == "active", before
    await report_usage(client, context.settings, deployment_id)
    alice_cost = (await client.get("/analytics/cost", headers=alice)).text
    assert deployment_id in alice_cost, "Alice sees her own usage (the check below can fail)"
    secrets = [model_id, deployment_id, "alice-secret-model", "alice-endpoint"]

    ids = {"model_id": model_id, "deployment_id": deployment_id}
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/models/{model_id:str}/optimize"): {"method": "graph"},
        ("PUT", "/deployments/{deployment_id:str}"): {"metadata": {"owner": "bob"}},
        ("POST", "/deployments"): deployment_body(model_id),
        ("POST", "/deployments/{deployment_id:str}/usage"): {"instance_id": "i", "minutes": []},
    }
    unknown = {"model_id": str(uuid.uuid4()), "deployment_id": str(uuid.uuid4())}
    for method, template in sorted(app_routes(client.app) - PUBLIC):
        response = await call_as(client, bob, upload, method, template, ids, bodies)
        where = f"{method} {template} as Bob: {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        assert response.status_code != 403 or template == "/auth/users", where
        if (method, template) in BY_ID or (method, template) == ("POST", "/deployments"):
            # Exactly what an id that never existed gets: Alice's id tells Bob nothing.
            never = await call_as(client, bob, upload, method, template, unknown, bodies)
            assert response.status_code == never.status_code == expected_status(template), where
            anonymised = response.text.replace(model_id, "X").replace(deployment_id, "X")
            assert anonymised == never.text.replace(unknown["model_id"], "X").replace(
                unknown["deployment_id"], "X"
            ), where
        else:
            for secret in secrets:
                assert secret not in response.text, where
    after = await settled(client, alice, deployment_id)
    assert after["status"] == "active"
    assert after["updated_at"] == before["updated_at"]
    still = await client.get(f"/models/{model_id}", headers=alice)
    assert still.status_code == 200
    assert still.json()["name"] == "alice-secret-model"
    optimized = (await client.get(f"/models/{model_id}/optimized", headers=alice)).json()
    assert [row["id"] for row in optimized] == [optimizing.json()["id"]], (
        "Bob's optimize call added nothing to Alice's model"
    )
    deployments = (await client.get("/deployments", headers=alice)).json()
    assert [row["id"] for row in deployments] == [deployment_id]
    bobs_models = (await client.get("/models", headers=bob)).json()
    assert [m["name"] for m in bobs_models] == ["bobs-model"]


def expected_status(template: str) -> int:
    """Alice's id in the path is a 404; in ``POST /deployments``'s body, the ``model_id`` field
    does not fit (422, "not found"); the usage route only knows deployments' own tokens (401)."""
    if template == "/deployments":
        return 422
    return 401 if template.endswith("/usage") else 404


async def call_as(
    client: Client,
    headers: dict[str, str],
    upload: Upload,
    method: str,
    template: str,
    ids: dict[str, str],
    bodies: dict[tuple[str, str], dict[str, Any]],
) -> Any:
    """Call one route with ``ids`` in its path (and its request body, for ``POST /deployments``
    and ``PUT``)."""
    if (method, template) == ("POST", "/models"):
        return await upload(headers, name="bobs-model")
    path = template.replace("{model_id:str}", ids["model_id"]).replace(
        "{deployment_id:str}", ids["deployment_id"]
    )
    body = bodies.get((method, template))
    if body is not None and "model_id" in body:
        body = {**body, "model_id": ids["model_id"]}
    return await client.request(method, path, json=body, headers=headers)


async def report_usage(client: Client, settings: Settings, deployment_id: str) -> None:
    """One minute of traffic for the deployment, sent as its serving instance would."""
    minute = (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0)
    token = usage_token(load_signing_key(settings), deployment_id)
    response = await client.post(
        f"/deployments/{deployment_id}/usage",
        json={
            "instance_id": "i-1",
            "minutes": [
                {
                    "start": minute.isoformat(),
                    "requests": 10,
                    "latency_ms_sum": 20.0,
                    "latency_buckets": [0, 0, 10] + [0] * 12,
                    "instance_seconds": 60.0,
                }
            ],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text
