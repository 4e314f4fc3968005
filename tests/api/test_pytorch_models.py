"""PyTorch uploads end to end: converted to ONNX once, at upload, in the confined child (from
``sample_data`` for TorchScript), served as that ONNX on every target, optimized from it with the
sample data, and deleted with it."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from advanced_alchemy.types import DateTimeUTC
from alembic import command
from sqlalchemy import JSON, Boolean, Connection, column, insert, select, table, update
from sqlalchemy.dialects.postgresql import JSONB

from aideploy.settings import Settings
from api.context import ApiContext
from api.db.engine import Database, alembic_config
from api.db.tables import ModelRow
from tests.api.conftest import Client
from tests.api.test_deployments_local import local_body, settle
from tests.api.test_optimizations import finished

FEATURES, CLASSES, SAMPLES = 4, 3, 24


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(FEATURES, 16)
        self.head = torch.nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(torch.relu(self.hidden(x)))
        return logits


class Spectrum(torch.nn.Module):
    """Uses an operator the ONNX exporter does not support."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum: torch.Tensor = torch.fft.rfft(x)
        return spectrum.abs()


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((SAMPLES, FEATURES)).astype(np.float32)


@pytest.fixture
def torchscript(tmp_path: Path) -> Path:
    path = tmp_path / "classifier.pt"
    torch.jit.save(torch.jit.script(Classifier().eval()), str(path))
    return path


@pytest.fixture
def sample_data(tmp_path: Path, inputs: np.ndarray) -> Path:
    """Inputs with the classifier's own predictions as labels: its top-1 accuracy is 100%."""
    with torch.no_grad():
        labels = Classifier().eval()(torch.from_numpy(inputs)).argmax(-1).numpy()
    path = tmp_path / "examples.npz"
    np.savez(path, x=inputs, labels=labels)
    return path


def npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


async def upload_pytorch(
    client: Client,
    headers: dict[str, str],
    model: Path,
    sample: Path | None = None,
    framework: str = "pytorch",
) -> Any:
    files = {"file": (model.name, model.read_bytes(), "application/octet-stream")}
    if sample is not None:
        files["sample_data"] = (sample.name, sample.read_bytes(), "application/octet-stream")
    return await client.post(
        "/models",
        data={"name": model.stem, "framework": framework, "version": "1.0"},
        files=files,
        headers=headers,
    )


def stored(context: ApiContext, model_id: str) -> list[str]:
    """The model's keys in the store, without the ``models/<id>/`` prefix."""
    prefix = f"models/{model_id}/"
    return sorted(key.removeprefix(prefix) for key in context.store.modification_times(prefix))


def nothing_left(context: ApiContext) -> bool:
    staging = context.settings.data_dir / "staging"
    leftovers = list(staging.iterdir()) if staging.exists() else []
    return not leftovers and not context.store.modification_times("models")


async def serving_path(context: ApiContext, model_id: str) -> Path:
    """The recorded serving artifact (read through an engine of the test's own loop: the app
    runs on the test client's)."""
    database = Database(context.settings.effective_database_url)
    try:
        async with database.session() as session:
            row = await session.get(ModelRow, model_id)
    finally:
        await database.dispose()
    assert row is not None
    assert row.serving_path is not None
    return context.store.local_path(row.serving_path)


async def test_torchscript_needs_sample_data_and_is_converted_at_upload(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    torchscript: Path,
    sample_data: Path,
    inputs: np.ndarray,
) -> None:
    refused = await upload_pytorch(client, alice, torchscript)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "sample_data"
    assert "TorchScript records no input shapes" in error["message"]
    assert "['x']" in error["message"], "it names the inputs the .npz must hold"
    assert nothing_left(context)

    created = await upload_pytorch(client, alice, torchscript, sample_data)
    assert created.status_code == 201, created.text
    model_id = created.json()["model_id"]
    assert Path(created.json()["storage_path"]).read_bytes() == torchscript.read_bytes()
    assert stored(context, model_id) == [
        "original/classifier.pt",
        "sample/examples.npz",
        "serving/classifier.onnx",
    ]
    metadata = (await client.get(f"/models/{model_id}", headers=alice)).json()["metadata"]
    assert metadata["signature"]["format"] == "torchscript"
    assert metadata["serving"]["converted_from"] == "torchscript"
    assert metadata["serving"]["format"] == "onnx"
    assert metadata["serving"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["sample_data"]["filename"] == "examples.npz"
    assert metadata["sample_data"]["samples"] == SAMPLES
    assert metadata["sample_data"]["labels"] is True
    assert list((context.settings.data_dir / "staging").iterdir()) == []

    served = ort.InferenceSession(str(await serving_path(context, model_id)))
    with torch.no_grad():
        expected = Classifier().eval()(torch.from_numpy(inputs)).numpy()
    [actual] = served.run(None, {"x": inputs})
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


async def test_a_torch_export_program_converts_from_its_own_example_inputs(
    client: Client, context: ApiContext, alice: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "exported.pt2"
    program = torch.export.export(Classifier().eval(), (torch.ones(2, FEATURES),))
    torch.export.save(program, str(path))

    created = await upload_pytorch(client, alice, path)

    assert created.status_code == 201, created.text
    model_id = created.json()["model_id"]
    assert stored(context, model_id) == ["original/exported.pt2", "serving/exported.onnx"]
    model = (await client.get(f"/models/{model_id}", headers=alice)).json()
    assert model["metadata"]["serving"]["converted_from"] == "torch.export"
    assert "sample_data" not in model["metadata"]
    [served_input] = model["metadata"]["serving"]["inputs"]
    assert served_input["shape"] == [-1, FEATURES], "the static batch was made dynamic"


async def test_sample_data_that_does_not_fit_the_model_is_422_naming_it(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    onnx_model: Path,
    torchscript: Path,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    cases = [
        (onnx_model, "onnx", npz(tmp_path / "names.npz", x=rng.random((4, 4))), "inputs ['X']"),
        (
            onnx_model,
            "onnx",
            npz(tmp_path / "shape.npz", X=rng.random((4, 5)).astype(np.float32)),
            "the model expects [N, 4]",
        ),
        (
            onnx_model,
            "onnx",
            npz(tmp_path / "count.npz", X=rng.random((4, 4)), labels=np.zeros(3, np.int64)),
            "same number of samples",
        ),
        (torchscript, "pytorch", npz(tmp_path / "ts.npz", y=rng.random((4, 4))), "inputs ['x']"),
    ]
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an archive")
    cases.append((onnx_model, "onnx", junk, "not a readable .npz"))
    for model, framework, sample, expected in cases:
        response = await upload_pytorch(client, alice, model, sample, framework=framework)
        assert response.status_code == 422, (sample.name, response.text)
        [error] = response.json()["errors"]
        assert error["field"] == "sample_data", response.text
        assert expected in error["message"], response.text
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    response = await upload_pytorch(client, alice, onnx_model, empty, framework="onnx")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "sample_data"
    assert nothing_left(context)
    assert (await client.get("/models", headers=alice)).json() == []


async def test_sample_data_over_the_limit_is_413_naming_it(
    client: Client, context: ApiContext, alice: dict[str, str], onnx_model: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.npz"
    big.write_bytes(b"\0" * (context.settings.max_upload_bytes + 1))
    response = await upload_pytorch(client, alice, onnx_model, big, framework="onnx")
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("sample_data: the sample data is larger")
    assert nothing_left(context)


async def test_a_model_that_cannot_be_converted_is_422_with_the_converters_message(
    client: Client, context: ApiContext, alice: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "spectrum.pt"
    torch.jit.save(torch.jit.script(Spectrum()), str(path))
    sample = npz(tmp_path / "signal.npz", x=np.ones((2, 8), np.float32))

    response = await upload_pytorch(client, alice, path, sample)

    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "file"
    assert error["message"].startswith("model: could not convert spectrum.pt to ONNX (")
    assert "aten::fft_rfft" in error["message"]
    assert "\n" not in error["message"]
    assert nothing_left(context)


async def test_an_original_torchscript_model_is_served_as_its_onnx_conversion(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    torchscript: Path,
    sample_data: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real local runner serves the ONNX converted at upload; nothing of the model is
    converted or loaded in the API process when it deploys."""
    import optimizer

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("the API process converted a model")

    monkeypatch.setattr(optimizer, "to_onnx", never)
    monkeypatch.setattr(torch.jit, "load", never)
    model_id = (await upload_pytorch(client, alice, torchscript, sample_data)).json()["model_id"]
    created = await client.post(
        "/deployments", json=local_body(model_id, name="scripted"), headers=alice
    )
    assert created.status_code == 202, created.text
    deployment_id = created.json()["id"]
    active = await settle(client, alice, deployment_id)
    assert active["status"] == "active", active
    events = (await client.get(f"/deployments/{deployment_id}/events", headers=alice)).json()
    assert "converting" not in [event["kind"] for event in events]

    request = urllib.request.Request(
        f"{active['endpoint']}/v2/models/scripted/infer",
        data=json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        [output] = json.loads(response.read())["outputs"]
    with torch.no_grad():
        expected = Classifier().eval()(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).numpy()
    assert output["shape"] == [1, CLASSES]
    np.testing.assert_allclose(np.array(output["data"]), expected.reshape(-1), rtol=1e-4)

    assert (await client.delete(f"/deployments/{deployment_id}", headers=alice)).status_code == 202
    assert await settle(client, alice, deployment_id) == {}


async def test_a_torchscript_model_is_optimized_with_its_sample_data_and_labels(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    torchscript: Path,
    sample_data: Path,
) -> None:
    model_id = (await upload_pytorch(client, alice, torchscript, sample_data)).json()["model_id"]
    response = await client.post(
        f"/models/{model_id}/optimize",
        json={
            "method": "quantization",
            "metadata": {"precision": "int8-static", "batch_sizes": [1]},
        },
        headers=alice,
    )
    assert response.status_code == 202, response.text

    [result] = await finished(client, alice, model_id)

    assert result["status"] == "completed", result
    metadata = result["metadata"]
    assert metadata["accuracy_metric"] == "top1_accuracy", "judged on the labels"
    assert metadata["data_generated"] is False
    assert not [note for note in metadata["notes"] if "generated" in note]
    report = json.loads(Path(metadata["report_path"]).read_text())
    assert report["accuracy"]["samples"] == SAMPLES
    assert report["accuracy"]["original"] == 100.0, "the labels are the model's own predictions"
    assert not [note for note in report["notes"] if "converted from" in note], (
        "the optimizer started from the ONNX converted at upload"
    )


async def test_delete_removes_the_conversion_and_the_sample_data(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    torchscript: Path,
    sample_data: Path,
) -> None:
    model_id = (await upload_pytorch(client, alice, torchscript, sample_data)).json()["model_id"]
    served = await serving_path(context, model_id)
    assert len(stored(context, model_id)) == 3

    response = await client.delete(f"/models/{model_id}", headers=alice)

    assert response.status_code == 200, response.text
    assert stored(context, model_id) == []
    assert not served.exists()
    assert nothing_left(context)


async def test_models_uploaded_before_conversion_at_upload(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    torchscript: Path,
    sample_data: Path,
) -> None:
    """A PyTorch model recorded without a serving artifact (uploaded before this revision) is a
    422 naming model_id when deployed, saying to upload it again; it is never converted here."""
    model_id = (await upload_pytorch(client, alice, torchscript, sample_data)).json()["model_id"]
    database = Database(context.settings.effective_database_url)
    try:
        async with database.session() as session:
            await session.execute(
                update(ModelRow).where(ModelRow.id == model_id).values(serving_path=None)
            )
    finally:
        await database.dispose()
    response = await client.post(
        "/deployments", json=local_body(model_id, name="legacy"), headers=alice
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "model_id"
    assert "upload it again" in response.json()["detail"]


async def test_the_migration_serves_earlier_onnx_uploads_as_they_are(settings: Settings) -> None:
    """Revision 0006 sets ``serving_path`` to ``storage_path`` for models whose signature says
    ONNX; earlier PyTorch uploads keep none."""
    database = Database(settings.effective_database_url)

    stamp = DateTimeUTC(timezone=True)
    users = table(
        "users",
        *(column(name) for name in ("id", "username", "password_hash")),
        column("is_admin", Boolean()),
        column("created_at", stamp),
        column("updated_at", stamp),
    )
    models = table(
        "models",
        *(column(name) for name in ("id", "owner_id", "name", "framework", "version")),
        *(column(name) for name in ("storage_path", "sha256", "size_bytes")),
        column("metadata", JSON().with_variant(JSONB(), "postgresql")),
        column("created_at", stamp),
        column("updated_at", stamp),
    )
    now = datetime.now(UTC)

    def to_0005(connection: Connection) -> None:
        config = alembic_config(connection)
        command.upgrade(config, "head")
        command.downgrade(config, "0005")
        connection.execute(
            insert(users).values(
                id="u", username="legacy-owner", password_hash="x", is_admin=False,
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        for model_id, format_ in (("m-onnx", "onnx"), ("m-torch", "torchscript")):
            connection.execute(
                insert(models).values(
                    id=model_id, owner_id="u", name=model_id, framework="pytorch", version="1",
                    storage_path=f"/store/{model_id}", sha256="h", size_bytes=1,
                    metadata={"signature": {"format": format_}},
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip

    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(to_0005)
        await database.migrate()
        async with database.session() as session:
            legacy = await session.scalars(select(ModelRow).where(ModelRow.owner_id == "u"))
            rows = {row.id: row.serving_path for row in legacy}
    finally:
        await database.dispose()
    assert rows == {"m-onnx": "/store/m-onnx", "m-torch": None}
