"""Optimization requests and their results, stored as optimized-model rows."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import (
    OptimizationJob,
    OptimizationMethod,
    OptimizationRequest,
    OptimizationStatus,
    OptimizedModel,
)
from api.context import ApiContext
from api.db.tables import OptimizedModelRow
from api.errors import NotFoundError
from api.jobs.queue import JobKind, add_job
from api.models.service import get_model, hold_model


def to_optimized_model(row: OptimizedModelRow) -> OptimizedModel:
    return OptimizedModel(
        id=row.id,
        original_model_id=row.original_model_id,
        optimization_method=OptimizationMethod(row.optimization_method),
        status=OptimizationStatus(row.status),
        storage_path=row.storage_path,
        size_reduction_percentage=row.size_reduction_percentage,
        latency_reduction_percentage=row.latency_reduction_percentage,
        accuracy_change_percentage=row.accuracy_change_percentage,
        created_at=row.created_at,
        updated_at=row.updated_at,
        metadata=row.metadata_,
        status_reason=row.status_reason,
    )


def to_job(row: OptimizedModelRow) -> OptimizationJob:
    return OptimizationJob(
        id=row.id,
        original_model_id=row.original_model_id,
        optimization_method=OptimizationMethod(row.optimization_method),
        status=OptimizationStatus(row.status),
        created_at=row.created_at,
    )


async def start_optimization(
    session: AsyncSession,
    context: ApiContext,
    owner_id: str,
    model_id: str,
    request: OptimizationRequest,
) -> OptimizedModelRow:
    """Record the optimized model as ``optimizing`` and queue the job that produces it (the
    model is held meanwhile: it cannot be deleted between the check and the insert)."""
    await hold_model(session, owner_id, model_id)
    row = OptimizedModelRow(
        owner_id=owner_id,
        original_model_id=model_id,
        optimization_method=request.method.value,
        status=OptimizationStatus.OPTIMIZING.value,
        request=request.model_dump(mode="json"),
        metadata_=dict(request.metadata),
    )
    session.add(row)
    await session.flush()
    job = add_job(session, JobKind.OPTIMIZE, owner_id, row.id)
    await session.commit()  # the worker must see both rows
    await context.jobs.enqueue(job.id, JobKind.OPTIMIZE)
    return row


async def list_optimized(
    session: AsyncSession, owner_id: str, model_id: str
) -> list[OptimizedModelRow]:
    await get_model(session, owner_id, model_id)
    rows = await session.scalars(
        select(OptimizedModelRow)
        .where(
            OptimizedModelRow.original_model_id == model_id,
            OptimizedModelRow.owner_id == owner_id,
        )
        .order_by(OptimizedModelRow.created_at.desc(), OptimizedModelRow.id)
    )
    return list(rows)


async def get_optimized(
    session: AsyncSession, owner_id: str, optimized_id: str
) -> OptimizedModelRow:
    row = await session.scalar(
        select(OptimizedModelRow).where(
            OptimizedModelRow.id == optimized_id, OptimizedModelRow.owner_id == owner_id
        )
    )
    if row is None:
        raise NotFoundError(f"optimized model {optimized_id} not found")
    return row
