"""Model uploads: receive, validate with the optimizer's inspector, store, list, delete."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.errors import InputError
from aideploy.schema import (
    DeploymentStatus,
    Framework,
    Model,
    ModelType,
    ModelUploadForm,
    OptimizationStatus,
)
from api.db.tables import DeploymentRow, ModelRow, OptimizedModelRow, new_id
from api.errors import ConflictError, InvalidFieldError, NotFoundError, ServiceUnavailableError
from api.models.inspection import InspectionError, inspect_uploaded_model
from api.models.upload import StagedUpload
from api.storage import ArtifactStore

log = logging.getLogger("aideploy.api.models")

_LIVE = [s.value for s in DeploymentStatus if s is not DeploymentStatus.FAILED]
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
        return ModelUploadForm.model_validate(fields)
    except ValidationError as exc:
        raise InvalidFieldError.from_validation(exc) from None


async def inspect_upload(path: Path, framework: Framework) -> dict[str, Any]:
    """Validate the file with ``optimizer.inspect_model``; 422 naming the field if unfit."""
    try:
        described = await inspect_uploaded_model(path)
    except InputError as exc:
        raise InvalidFieldError("file", str(exc)) from None
    except InspectionError as exc:  # the checker failed, not the model: try again later
        raise ServiceUnavailableError(f"file: could not validate the model ({exc})") from None
    detected = str(described.get("format") or "").lower()
    if detected and detected not in _FORMATS_BY_FRAMEWORK[framework]:
        raise InvalidFieldError(
            "framework",
            f"the file is {detected}, which does not fit framework {framework.value!r} "
            f"(accepted: {', '.join(sorted(_FORMATS_BY_FRAMEWORK[framework]))})",
        )
    return described


async def create_model(
    session: AsyncSession,
    store: ArtifactStore,
    owner_id: str,
    upload: StagedUpload,
) -> ModelRow:
    """Validate the staged upload and move it into the store; the row records where."""
    form = parse_upload_form(upload.fields)
    signature = await inspect_upload(upload.path, form.framework)
    model_id = new_id()
    filename = Path(upload.filename).name or "model"
    location = await anyio.to_thread.run_sync(
        store.put, upload.path, f"{model_key(model_id)}/original/{filename}"
    )
    row = ModelRow(
        id=model_id,
        owner_id=owner_id,
        name=form.name,
        framework=form.framework.value,
        version=form.version,
        storage_path=location,
        sha256=upload.sha256,
        size_bytes=upload.size,
        metadata_={
            **form.metadata,
            "sha256": upload.sha256,
            "size_bytes": upload.size,
            "filename": filename,
            "signature": signature,
        },
    )
    session.add(row)
    await session.flush()
    return row


async def list_models(
    session: AsyncSession, owner_id: str, *, limit: int, offset: int
) -> list[ModelRow]:
    query = (
        select(ModelRow)
        .where(ModelRow.owner_id == owner_id)
        .order_by(ModelRow.created_at.desc(), ModelRow.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(await session.scalars(query))


async def get_model(session: AsyncSession, owner_id: str, model_id: str) -> ModelRow:
    row = await session.scalar(
        select(ModelRow).where(ModelRow.id == model_id, ModelRow.owner_id == owner_id)
    )
    if row is None:
        raise NotFoundError(f"model {model_id} not found")
    return row


async def delete_model(
    session: AsyncSession, store: ArtifactStore, owner_id: str, model_id: str
) -> None:
    """Delete the model, its optimized children and their artifacts (409 while deployed)."""
    row = await get_model(session, owner_id, model_id)
    children = select(OptimizedModelRow.id).where(OptimizedModelRow.original_model_id == model_id)
    in_use = await session.scalar(
        select(func.count())
        .select_from(DeploymentRow)
        .where(
            DeploymentRow.owner_id == owner_id,
            DeploymentRow.status.in_(_LIVE),
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
            f"model {model_id} is used by {in_use} live deployment(s); delete them first"
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
    await session.delete(row)
    await session.commit()  # the artifacts go only once the rows are gone for good
    await anyio.to_thread.run_sync(store.delete_prefix, model_key(model_id))
