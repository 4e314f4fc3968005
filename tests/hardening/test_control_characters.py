"""NUL and other control characters in every kind of input (a path id, a query parameter, a JSON
body string or key, a login, an upload's form fields and file name) are a 404 or 422 naming
the field, on SQLite and PostgreSQL alike (PostgreSQL cannot store NUL at all), and a refused
upload leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from api.context import ApiContext
from tests.api.conftest import ADMIN, Client, Upload, _bearer
from tests.hardening.test_hostile_models import files_under

NUL = "a\x00b"
ESC = "a\x1bb"


def assert_names(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status
    assert [error["field"] for error in body["errors"]][:1] == [field], body


@pytest.mark.parametrize("value", [NUL, ESC])
async def test_ids_in_the_path_with_control_characters_name_nothing(
    client: Client, alice: dict[str, str], value: str
) -> None:
    for method, path, field in (
        ("GET", "/models/{}", "model_id"),
        ("DELETE", "/models/{}", "model_id"),
        ("GET", "/models/{}/optimized", "model_id"),
        ("GET", "/deployments/{}", "deployment_id"),
        ("PUT", "/deployments/{}", "deployment_id"),
        ("POST", "/deployments/{}/hibernate", "deployment_id"),
        ("GET", "/deployments/{}/events", "deployment_id"),
    ):
        body: dict[str, Any] | None = {"metadata": {}} if method == "PUT" else None
        response = await client.request(
            method, path.format(quote(value, safe="")), json=body, headers=alice
        )
        assert_names(response, 404, field)


async def test_query_parameters_with_control_characters_are_422(
    client: Client, alice: dict[str, str], upload: Upload
) -> None:
    response = await client.get(
        "/deployments/x/events", params={"operation_id": NUL}, headers=alice
    )
    assert_names(response, 422, "operation_id")
    response = await client.get("/models", params={"limit": "1", NUL: "x"}, headers=alice)
    assert response.status_code == 422, response.text


async def test_json_strings_and_keys_with_control_characters_are_422(
    client: Client, alice: dict[str, str], upload: Upload
) -> None:
    assert_names(
        await client.post("/auth/token", json={"username": NUL, "password": "whatever"}),
        422,
        "body.username",
    )
    admin = await _bearer(client, ADMIN)
    assert_names(
        await client.post(
            "/auth/users", json={"username": "carol", "password": f"pass{NUL}word"}, headers=admin
        ),
        422,
        "body.password",
    )
    model_id = (await upload(alice)).json()["model_id"]
    assert_names(
        await client.post(
            f"/models/{model_id}/optimize",
            json={"method": "graph", "metadata": {"note": NUL}},
            headers=alice,
        ),
        422,
        "body.metadata.note",
    )
    body = {
        "name": "ok",
        "model_id": model_id,
        "target": {"cloud": "local"},
        "metadata": {ESC: "key"},
    }
    assert_names(
        await client.post("/deployments", json=body, headers=alice), 422, f"body.metadata.{ESC}"
    )
    assert_names(
        await client.post(
            "/deployments", json={**body, "metadata": {}, "model_id": NUL}, headers=alice
        ),
        422,
        "body.model_id",
    )
    assert (await client.get("/deployments", headers=alice)).json() == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": NUL}, "name"),
        ({"version": ESC}, "version"),
        ({"metadata": '{"team": "a\\u0000b"}'}, "metadata.team"),
    ],
)
async def test_upload_form_fields_with_control_characters_leave_nothing(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Upload,
    fields: dict[str, str],
    field: str,
) -> None:
    before = files_under(context.settings.data_dir)
    assert_names(await upload(alice, **fields), 422, field)
    assert files_under(context.settings.data_dir) == before
    assert (await client.get("/models", headers=alice)).json() == []


async def test_an_upload_named_with_control_characters_is_stored_under_a_safe_name(
    client: Client, alice: dict[str, str], onnx_model: Path
) -> None:
    response = await client.post(
        "/models",
        data={"name": "tiny", "framework": "onnx"},
        files={
            "file": ("../\x00evil\x1b.onnx", onnx_model.read_bytes(), "application/octet-stream")
        },
        headers=alice,
    )
    assert response.status_code == 201, response.text
    model_id = response.json()["model_id"]
    stored = Path(response.json()["storage_path"])
    # The client percent-encodes the NUL; what arrives is kept as letters, digits and ._-
    assert re.fullmatch(r"[A-Za-z0-9._-]*evil_\.onnx", stored.name), stored.name
    assert stored.parent.parts[-3:] == ("models", model_id, "original")
    assert stored.read_bytes() == onnx_model.read_bytes()
    model = (await client.get(f"/models/{model_id}", headers=alice)).json()
    assert model["metadata"]["filename"] == stored.name
