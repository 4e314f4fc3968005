"""``/models``: upload, list, get and delete models."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import Framework, Message, Model, ModelUploadResponse
from api.auth.middleware import CurrentUser
from api.context import ApiContext
from api.db.tables import new_id
from api.dependencies import PAGE_HEADERS, Page
from api.errors import documented_errors
from api.models import service
from api.models.upload import receive_model_upload


@dataclass
class _UploadOperation(Operation):
    """The upload reads the raw stream, so its form is described here for the schema."""

    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING)
        form = Schema(
            type=OpenAPIType.OBJECT,
            required=["name", "framework", "file"],
            properties={
                "name": text,
                "framework": Schema(type=OpenAPIType.STRING, enum=[f.value for f in Framework]),
                "version": text,
                "metadata": Schema(type=OpenAPIType.STRING, description="A JSON object."),
                "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
                "sample_data": Schema(
                    type=OpenAPIType.STRING,
                    format=OpenAPIFormat.BINARY,
                    description=(
                        "An extension of the seed's form: example inputs as a .npz of arrays "
                        "named like the model's inputs (first axis = samples), optionally "
                        "'labels'. Required for TorchScript, which records no input shapes: "
                        "the model is converted to ONNX for serving from these. Optimizations "
                        "calibrate on them, and judge accuracy on the labels."
                    ),
                ),
            },
        )
        self.request_body = RequestBody(
            content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True
        )


class ModelController(Controller):
    path = "/models"
    tags = ["models"]

    @get(
        operation_id="ListModels",
        responses=documented_errors(401, 422),
        response_headers=PAGE_HEADERS,
    )
    async def list_models(
        self,
        request: Request[CurrentUser, Any, Any],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        page: NamedDependency[Page],
    ) -> Response[Sequence[Model]]:
        """The caller's models, newest first, a page at a time (``X-Total-Count`` and ``Link``
        headers tell what else there is)."""
        rows, total = await service.list_models(
            db_session, current_user.id, limit=page.limit, offset=page.offset
        )
        return page.respond(request, [service.to_model(row) for row in rows], total)

    @get("/{model_id:str}", operation_id="GetModel", responses=documented_errors(401, 404))
    async def get_model(
        self,
        model_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
    ) -> Model:
        """One model, with its recorded signature, sha256 and size in ``metadata``."""
        return service.to_model(await service.get_model(db_session, current_user.id, model_id))

    @post(
        operation_id="UploadModel",
        responses=documented_errors(401, 413, 422, 503, 507),
        request_max_body_size=None,
        status_code=201,
        operation_class=_UploadOperation,
    )
    async def upload_model(
        self,
        request: Request[CurrentUser, Any, Any],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> ModelUploadResponse:
        """Upload a model (form fields ``name``, ``framework``, ``version``, ``metadata``,
        ``file``, and optionally ``sample_data``). The files are streamed to disk, hashed,
        size-limited and validated before they are accepted; a PyTorch model is converted to
        the ONNX it is served as."""
        folder = context.staging_dir / f"upload-{new_id()}"
        upload = await receive_model_upload(request, folder, context.settings.max_upload_bytes)
        try:
            row = await service.create_model(db_session, context.store, current_user.id, upload)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return ModelUploadResponse(
            model_id=row.id,
            name=row.name,
            framework=Framework(row.framework),
            version=row.version,
            storage_path=row.storage_path,
            created_at=row.created_at,
        )

    @delete(
        "/{model_id:str}",
        operation_id="DeleteModel",
        responses=documented_errors(401, 404, 409),
        status_code=200,
    )
    async def delete_model(
        self,
        model_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> Message:
        """Delete a model with its optimized versions and artifacts (409 while deployed)."""
        await service.delete_model(
            db_session, context.store, context.settings.data_dir, current_user.id, model_id
        )
        return Message(message=f"Model {model_id} deleted successfully")
