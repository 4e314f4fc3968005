"""Model upload (streamed, limited, hashed, validated), listing, ownership and deletion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.settings import Settings
from api.context import ApiContext
from api.dependencies import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.models import inspection, service

Client = AsyncTestClient[Litestar]


async def test_upload_records_hash_size_and_signature(
    client: Client, alice: dict[str, str], upload: Any, onnx_model: Path
) -> None:
    response = await upload(alice, metadata='{"team": "vision"}')
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {
        "model_id", "name", "framework", "version", "storage_path", "created_at",
    }  # fmt: skip
    assert Path(created["storage_path"]).read_bytes() == onnx_model.read_bytes()

    model = (await client.get(f"/models/{created['model_id']}", headers=alice)).json()
    assert model["metadata"]["team"] == "vision"
    assert model["metadata"]["sha256"] == hashlib.sha256(onnx_model.read_bytes()).hexdigest()
    assert model["metadata"]["size_bytes"] == onnx_model.stat().st_size
    signature = model["metadata"]["signature"]
    assert signature["format"] == "onnx"
    assert signature["inputs"][0]["name"] == "X"
    assert signature["inputs"][0]["shape"] == [-1, 4]

    listed = (await client.get("/models", headers=alice)).json()
    assert [item["id"] for item in listed] == [created["model_id"]]


async def test_upload_over_the_limit_is_413_and_leaves_nothing(
    client: Client, alice: dict[str, str], upload: Any, tmp_path: Path, settings: Settings
) -> None:
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * (settings.max_upload_bytes + 10))
    response = await upload(alice, path=big)
    assert response.status_code == 413
    assert response.json()["status_code"] == 413
    staged = list((settings.data_dir / "staging").glob("*"))
    assert staged == []
    assert (await client.get("/models", headers=alice)).json() == []


async def test_invalid_files_and_fields_are_422_naming_the_field(
    client: Client, alice: dict[str, str], upload: Any, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    response = await upload(alice, path=junk)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "file"

    response = await upload(alice, framework="caffe")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "framework"

    response = await upload(alice, metadata="[1, 2]")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "metadata"

    missing_file = await client.post(
        "/models", data={"name": "x", "framework": "onnx"}, files={}, headers=alice
    )
    assert missing_file.status_code in (400, 422)

    not_multipart = await client.post("/models", json={"name": "x"}, headers=alice)
    assert not_multipart.status_code == 400
    assert "multipart/form-data" in not_multipart.json()["detail"]


async def test_an_onnx_export_of_a_pytorch_model_is_accepted(
    client: Client, alice: dict[str, str], upload: Any, tmp_path: Path
) -> None:
    response = await upload(alice, framework="pytorch")
    assert response.status_code == 201


async def test_another_users_model_is_404(
    client: Client, alice: dict[str, str], bob: dict[str, str], upload: Any
) -> None:
    model_id = (await upload(alice)).json()["model_id"]
    assert (await client.get(f"/models/{model_id}", headers=bob)).status_code == 404
    assert (await client.delete(f"/models/{model_id}", headers=bob)).status_code == 404
    assert (await client.get("/models", headers=bob)).json() == []
    missing = await client.get("/models/nope", headers=alice)
    assert missing.json() == {"status_code": 404, "detail": "model nope not found", "errors": []}


async def test_delete_removes_row_and_artifacts(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    created = (await upload(alice)).json()
    response = await client.delete(f"/models/{created['model_id']}", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"message": f"Model {created['model_id']} deleted successfully"}
    assert not Path(created["storage_path"]).exists()
    assert (await client.get(f"/models/{created['model_id']}", headers=alice)).status_code == 404


async def test_list_is_paginated_and_says_so(
    client: Client, alice: dict[str, str], upload: Any
) -> None:
    for index in range(3):
        assert (await upload(alice, name=f"m{index}")).status_code == 201
    everything = await client.get("/models", headers=alice)
    assert [model["name"] for model in everything.json()] == ["m2", "m1", "m0"]
    assert everything.headers["x-total-count"] == "3"
    assert "link" not in everything.headers, "one page holds everything"

    first = await client.get("/models", params={"limit": 2}, headers=alice)
    assert [model["name"] for model in first.json()] == ["m2", "m1"]
    assert first.headers["x-total-count"] == "3"
    assert first.headers["link"] == '<http://testserver.local/models?limit=2&offset=2>; rel="next"'

    rest = await client.get("/models", params={"limit": 2, "offset": 2}, headers=alice)
    assert [model["name"] for model in rest.json()] == ["m0"]
    assert rest.headers["x-total-count"] == "3"
    assert rest.headers["link"] == '<http://testserver.local/models?limit=2&offset=0>; rel="prev"'
    bad = await client.get("/models", params={"limit": 0}, headers=alice)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "limit"
    too_many = await client.get("/models", params={"limit": MAX_PAGE_SIZE + 1}, headers=alice)
    assert too_many.status_code == 422


async def test_the_paging_is_documented(client: Client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    for path in ("/models", "/deployments"):
        listing = paths[path]["get"]
        [limit] = [p for p in listing["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["default"] == DEFAULT_PAGE_SIZE
        assert limit["schema"]["maximum"] == MAX_PAGE_SIZE
        assert set(listing["responses"]["200"]["headers"]) == {"X-Total-Count", "Link"}


async def test_recorded_metadata_keys_cannot_be_set_by_the_client(
    client: Client, context: ApiContext, alice: dict[str, str], upload: Any
) -> None:
    assert {"sha256", "signature", "serving", "sample_data"} <= set(service.RECORDED_METADATA)
    for key in service.RECORDED_METADATA:
        response = await upload(alice, metadata=json.dumps({"team": "x", key: "mine"}))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == f"metadata.{key}"
        assert "recorded by the server" in response.json()["detail"]
    assert stored_files(context) == []
    assert list((context.settings.data_dir / "staging").iterdir()) == []


async def test_a_failed_commit_leaves_no_artifact(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file moved into the store before the commit; the commit fails (the database went
    away): the file goes again, and the client gets the database's 503."""
    commit = AsyncSession.commit
    failures = [OperationalError("COMMIT", {}, ConnectionResetError("connection lost"))]

    async def failing_commit(self: AsyncSession) -> None:
        if failures:
            raise failures.pop()
        await commit(self)

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    response = await upload(alice)
    assert response.status_code == 503, response.text
    assert not failures, "the commit was attempted"
    assert stored_files(context) == []
    assert list((context.settings.data_dir / "staging").iterdir()) == []
    assert (await client.get("/models", headers=alice)).json() == []


def stored_files(context: ApiContext) -> list[str]:
    return sorted(context.store.modification_times("models"))


async def test_large_files_are_validated_in_a_child_process(
    client: Client,
    alice: dict[str, str],
    upload: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inspection, "IN_PROCESS_LIMIT_BYTES", 0)
    response = await upload(alice)
    assert response.status_code == 201, response.text
    model = (await client.get(f"/models/{response.json()['model_id']}", headers=alice)).json()
    assert model["metadata"]["signature"]["outputs"][0]["name"] == "Y"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    rejected = await upload(alice, path=junk)
    assert rejected.status_code == 422
    assert rejected.json()["errors"][0]["field"] == "file"
