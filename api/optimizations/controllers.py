"""``POST /models/{model_id}/optimize`` and ``GET /models/{model_id}/optimized``."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import OptimizationJob, OptimizationRequest, OptimizedModel
from api.auth.middleware import CurrentUser
from api.context import ApiContext
from api.errors import documented_errors
from api.optimizations import service


class OptimizationController(Controller):
    path = "/models/{model_id:str}"
    tags = ["optimizations"]

    @post(
        "/optimize",
        operation_id="OptimizeModel",
        responses=documented_errors(401, 404, 422),
        status_code=202,
    )
    async def optimize_model(
        self,
        model_id: FromPath[str],
        data: JSONBody[OptimizationRequest],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> OptimizationJob:
        """Start optimizing; answers at once with status ``optimizing``. The result appears in
        ``GET /models/{model_id}/optimized`` as ``completed`` or ``failed`` with the reason."""
        row = await service.start_optimization(db_session, context, current_user.id, model_id, data)
        return service.to_job(row)

    @get("/optimized", operation_id="ListOptimizedModels", responses=documented_errors(401, 404))
    async def list_optimized(
        self,
        model_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
    ) -> list[OptimizedModel]:
        """The model's optimized versions with their status and measured percentages."""
        rows = await service.list_optimized(db_session, current_user.id, model_id)
        return [service.to_optimized_model(row) for row in rows]
