"""Model uploads: receive, validate with the optimizer's inspector (converting PyTorch models to
the ONNX they are served as), store, list, delete."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.errors import InputError
from aideploy.schema import (
    Framework,
    Model,
    ModelType,
    ModelUploadForm,
    OptimizationStatus,
)
from api.db.locks import lock_row
from api.db.tables import DeploymentRow, ModelRow, OptimizedModelRow, new_id
from api.errors import ConflictError, InvalidFieldError, NotFoundError, ServiceUnavailableError
from api.models.inspection import (
    Inspection,
    InspectionError,
    SampleDataError,
    inspect_upload_files,
)
from api.models.orphans import remove_work_folders
from api.models.upload import StagedUpload
from api.security import control_character_field
from api.storage import ArtifactStore

log = logging.getLogger("aideploy.api.models")

RECORDED_METADATA = ("sha256", "size_bytes", "filename", "signature", "serving", "sample_data")
"""``metadata`` keys the server records on upload; a client's own metadata cannot use them."""
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
# The formats each declared framework may arrive as; a TensorFlow model arrives as ONNX.
_FORMATS_BY_FRAMEWORK = {
    Framework.ONNX: {"onnx"},
    Framework.TENSORFLOW: {"onnx"},
    Framework.PYTORCH: {"torchscript", "torch.export", "onnx"},
}


def model_key(model_id: str) -> str:
    """Everything of one model (the upload and every optimized child) lives under this key."""
    return f"models/{model_id}"


def to_model(row: ModelRow) -> Model:
    return Model(
        id=row.id,
        name=row.name,
        framework=Framework(row.framework),
        version=row.version,
        storage_path=row.storage_path,
        created_at=row.created_at,
        updated_at=row.updated_at,
        metadata=row.metadata_,
    )


def parse_upload_form(fields: dict[str, str]) -> ModelUploadForm:
    """The text fields of the form, validated by the shared schema (422 naming the field)."""
    unknown = sorted(set(fields) - set(ModelUploadForm.model_fields))
    if unknown:
        raise InvalidFieldError(unknown[0], "unknown form field")
    try:
        form = ModelUploadForm.model_validate(fields)
    except ValidationError as exc:
        raise InvalidFieldError.from_validation(exc) from None
    bad = control_character_field(form.model_dump(mode="json"), "form")
    if bad:
        raise InvalidFieldError(bad.removeprefix("form."), "must not contain control characters")
    taken = [key for key in RECORDED_METADATA if key in form.metadata]
    if taken:
        raise InvalidFieldError(
            f"metadata.{taken[0]}",
            f"is recorded by the server on upload ({', '.join(RECORDED_METADATA)}); "
            "use another key",
        )
    return form


def stored_filename(uploaded: str, default: str = "model") -> str:
    """An uploaded file's name as the store keeps it: its last path component, in letters,
    digits and ``._-`` (the name is part of a storage key and of ``metadata``)."""
    name = PurePosixPath(uploaded.replace("\\", "/")).name
    return _UNSAFE_FILENAME.sub("_", name).strip("._")[:128] or default


async def inspect_upload(upload: StagedUpload, framework: Framework) -> Inspection:
    """Validate the file with ``optimizer.inspect_model`` and the sample data against it,
    and convert a PyTorch model to ONNX for serving; 422 naming the field if unfit. The file is
    alone in its private staging folder, so a model whose tensors point at external data files
    is refused: there is nothing beside it to read."""
    try:
        inspection = await inspect_upload_files(
            upload.file.path,
            sample_data=upload.sample_data.path if upload.sample_data else None,
            convert_dir=upload.convert_dir if framework is Framework.PYTORCH else None,
        )
    except SampleDataError as exc:
        raise InvalidFieldError("sample_data", str(exc)) from None
    except InputError as exc:  # it names the staged file: say the name it was uploaded as
        named = str(exc).replace(upload.file.path.name, stored_filename(upload.file.filename))
        raise InvalidFieldError("file", named) from None
    except InspectionError as exc:  # the checker failed, not the model: try again later
        raise ServiceUnavailableError(f"file: could not validate the model ({exc})") from None
    detected = str(inspection.signature.get("format") or "").lower()
    if detected and detected not in _FORMATS_BY_FRAMEWORK[framework]:
        raise InvalidFieldError(
            "framework",
            f"the file is {detected}, which does not fit framework {framework.value!r} "
            f"(accepted: {', '.join(sorted(_FORMATS_BY_FRAMEWORK[framework]))})",
        )
    return inspection


async def create_model(
    session: AsyncSession,
    store: ArtifactStore,
    owner_id: str,
    upload: StagedUpload,
) -> ModelRow:
    """Validate the staged upload (converting a PyTorch model to ONNX), write its row, move the
    files into the store, commit.

    The files move only once the row has been written (so a value the database refuses leaves
    nothing behind), and the model's key is removed again if a move or the commit fails. Only a
    crash between the moves and the commit can leave files without a row: the start-up sweep
    (:mod:`api.models.orphans`) removes those."""
    form = parse_upload_form(upload.fields)
    inspection = await inspect_upload(upload, form.framework)
    model_id = new_id()
    filename = stored_filename(upload.file.filename)
    metadata: dict[str, Any] = {
        **form.metadata,
        "sha256": upload.file.sha256,
        "size_bytes": upload.file.size,
        "filename": filename,
        "signature": inspection.signature,
    }
    if inspection.serving_signature is not None:
        metadata["serving"] = {
            "converted_from": inspection.signature.get("format"),
            **inspection.serving_signature,
        }
    sample = upload.sample_data
    if sample is not None:
        metadata["sample_data"] = {
            "filename": stored_filename(sample.filename, "sample_data"),
            "size_bytes": sample.size,
            "sha256": sample.sha256,
            **(inspection.sample or {}),
        }
    row = ModelRow(
        id=model_id,
        owner_id=owner_id,
        name=form.name,
        framework=form.framework.value,
        version=form.version,
        storage_path="",
        sha256=upload.file.sha256,
        size_bytes=upload.file.size,
        metadata_=metadata,
    )
    session.add(row)
    await session.flush()
    key = model_key(model_id)
    try:
        row.storage_path = await anyio.to_thread.run_sync(
            store.put, upload.file.path, f"{key}/original/{filename}"
        )
        row.serving_path = row.storage_path
        if inspection.serving is not None:
            stem = PurePosixPath(filename).stem or "model"
            row.serving_path = await anyio.to_thread.run_sync(
                store.put, inspection.serving, f"{key}/serving/{stem}.onnx"
            )
        if sample is not None:
            row.sample_data_path = await anyio.to_thread.run_sync(
                store.put, sample.path, f"{key}/sample/{metadata['sample_data']['filename']}"
            )
        await session.commit()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(store.delete_prefix, key)
        raise
    return row


async def list_models(
    session: AsyncSession, owner_id: str, *, limit: int, offset: int
) -> tuple[list[ModelRow], int]:
    """One page of the owner's models, newest first, and how many they have in all."""
    query = (
        select(ModelRow)
        .where(ModelRow.owner_id == owner_id)
        .order_by(ModelRow.created_at.desc(), ModelRow.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = list(await session.scalars(query))
    total = await session.scalar(
        select(func.count()).select_from(ModelRow).where(ModelRow.owner_id == owner_id)
    )
    return rows, int(total or 0)


async def get_model(session: AsyncSession, owner_id: str, model_id: str) -> ModelRow:
    row = await session.scalar(
        select(ModelRow).where(ModelRow.id == model_id, ModelRow.owner_id == owner_id)
    )
    if row is None:
        raise NotFoundError(f"model {model_id} not found")
    return row


async def hold_model(session: AsyncSession, owner_id: str, model_id: str) -> None:
    """Keep the model from being deleted until this transaction ends (404 if it is gone).
    Whatever starts using a model (a deployment, an optimization) holds it first, and
    :func:`delete_model` locks it exclusively before it checks for users: one of the two waits
    for the other, so a model is never deleted under a new user."""
    if not await lock_row(
        session, ModelRow, ModelRow.id == model_id, ModelRow.owner_id == owner_id, shared=True
    ):
        raise NotFoundError(f"model {model_id} not found")


async def delete_model(
    session: AsyncSession, store: ArtifactStore, data_dir: Path, owner_id: str, model_id: str
) -> None:
    """Delete the model, its optimized children and their artifacts. 409 while any deployment
    uses it or one of its optimized versions, whatever the deployment's status: a failed
    deployment's resources can only be destroyed while its model is there."""
    if not await lock_row(
        session, ModelRow, ModelRow.id == model_id, ModelRow.owner_id == owner_id, shared=False
    ):
        raise NotFoundError(f"model {model_id} not found")
    row = await get_model(session, owner_id, model_id)
    children = select(OptimizedModelRow.id).where(OptimizedModelRow.original_model_id == model_id)
    in_use = await session.scalar(
        select(func.count())
        .select_from(DeploymentRow)
        .where(
            DeploymentRow.owner_id == owner_id,
            (
                (DeploymentRow.model_type == ModelType.ORIGINAL.value)
                & (DeploymentRow.model_id == model_id)
            )
            | (
                (DeploymentRow.model_type == ModelType.OPTIMIZED.value)
                & DeploymentRow.model_id.in_(children)
            ),
        )
    )
    if in_use:
        raise ConflictError(
            f"model {model_id} is used by {in_use} deployment(s) (in any status, failed ones "
            "too); delete them first"
        )
    running = await session.scalar(
        select(func.count())
        .select_from(OptimizedModelRow)
        .where(
            OptimizedModelRow.original_model_id == model_id,
            OptimizedModelRow.status == OptimizationStatus.OPTIMIZING.value,
        )
    )
    if running:
        raise ConflictError(
            f"model {model_id} is being optimized; wait for the optimization to end"
        )
    derived = list(await session.scalars(children))
    await session.delete(row)
    await session.commit()  # the artifacts go only once the rows are gone for good
    await anyio.to_thread.run_sync(store.delete_prefix, model_key(model_id))
    await anyio.to_thread.run_sync(remove_work_folders, data_dir, [model_id, *derived])
