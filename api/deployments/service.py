"""Deployment lifecycle: every operation is a guarded status change plus a durable job.

Statuses move ``creating -> active | failed``, ``updating -> active``, ``hibernating ->
hibernated``, ``activating -> active``, ``deleting -> (gone)``. The change is one conditional
``UPDATE ... WHERE status = <as read> AND version = <as read>`` that bumps ``version``, so two
racing requests cannot both start an operation, and an update computed from a row that changed
meanwhile (even one that is back in the same status) cannot overwrite that change: the loser
gets 409 and retries from the current state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import (
    Cloud,
    Deployment,
    DeploymentCreate,
    DeploymentStatus,
    DeploymentUpdate,
    ModelType,
    OptimizationStatus,
    Target,
)
from aideploy.settings import Settings
from api.context import ApiContext
from api.db.tables import DeploymentEventRow, DeploymentRow, ModelRow
from api.errors import ConflictError, InvalidFieldError, NotFoundError, ServiceUnavailableError
from api.jobs.queue import JobKind, add_job
from api.models.service import get_model, hold_model
from api.optimizations.service import get_optimized
from api.runners.base import RunnerUnavailableError
from api.storage import is_object_url

S = DeploymentStatus
BUSY = (S.CREATING, S.UPDATING, S.HIBERNATING, S.ACTIVATING, S.DELETING)


class Operation(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    HIBERNATE = "hibernate"
    ACTIVATE = "activate"
    DELETE = "delete"
    RESTORE = "restore"
    """Bring an active local deployment back after an API restart (status unchanged)."""


# For each operation: the statuses it may start from, and the status while it runs.
_TRANSITIONS: dict[Operation, tuple[tuple[DeploymentStatus, ...], DeploymentStatus]] = {
    Operation.UPDATE: ((S.ACTIVE, S.HIBERNATED, S.FAILED), S.UPDATING),
    Operation.HIBERNATE: ((S.ACTIVE,), S.HIBERNATING),
    Operation.ACTIVATE: ((S.HIBERNATED,), S.ACTIVATING),
    Operation.DELETE: ((S.ACTIVE, S.HIBERNATED, S.FAILED), S.DELETING),
}

_SPEC_FIELDS = ("resource_requirements", "scaling_policy", "cost_optimization_policy", "target")


def to_deployment(row: DeploymentRow) -> Deployment:
    return Deployment.model_validate(
        {
            "id": row.id,
            "name": row.name,
            "model_id": row.model_id,
            "model_type": row.model_type,
            "deployment_type": row.deployment_type,
            "status": row.status,
            "endpoint": row.endpoint,
            **row.spec,
            "metadata": row.metadata_,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "status_reason": row.status_reason,
        }
    )


def resolve_target(spec: DeploymentCreate, settings: Settings) -> Target | None:
    """Where the deployment runs: its own ``target``; without one, ``None`` when multi-cloud
    placement is on (the program picks the cheapest cloud and region), else the configured
    default cloud."""
    if spec.target is not None:
        return spec.target
    if spec.cost_optimization_policy.multi_cloud_enabled:
        return None
    region = settings.default_regions.get(settings.default_cloud)
    return Target(cloud=settings.default_cloud, region=region)


def stack_name_for(row: DeploymentRow) -> str:
    """One Pulumi stack per deployment; the id suffix keeps two owners' names apart."""
    return f"{row.name}-{row.id[:8]}"


async def artifact_location(
    session: AsyncSession, owner_id: str, model_id: str, model_type: ModelType
) -> str:
    """The artifact a deployment serves, always ONNX (an original model's ``serving_path``:
    the upload, or its conversion at upload); 422 on ``model_id`` when it cannot be served."""
    try:
        if model_type is ModelType.ORIGINAL:
            return _serving_path(await get_model(session, owner_id, model_id))
        optimized = await get_optimized(session, owner_id, model_id)
    except NotFoundError as exc:
        raise InvalidFieldError(
            "model_id", f"{exc.detail} (model_type {model_type.value!r})"
        ) from None
    if optimized.status != OptimizationStatus.COMPLETED.value or not optimized.storage_path:
        raise InvalidFieldError(
            "model_id",
            f"optimized model {model_id} is {optimized.status}; only a completed one deploys",
        )
    return optimized.storage_path


def _serving_path(model: ModelRow) -> str:
    if model.serving_path is None:
        raise InvalidFieldError(
            "model_id",
            f"model {model.id} was uploaded before PyTorch models were converted to ONNX at "
            "upload, and the serving runtime loads ONNX only; upload it again",
        )
    return model.serving_path


async def hold_served_model(
    session: AsyncSession, owner_id: str, model_id: str, model_type: ModelType
) -> None:
    """Keep the model a deployment serves (for an optimized model: its original, which its
    deletion goes through) from being deleted until this transaction commits; 422 on
    ``model_id`` when there is no such model."""
    try:
        original_id = (
            model_id
            if model_type is ModelType.ORIGINAL
            else (await get_optimized(session, owner_id, model_id)).original_model_id
        )
        await hold_model(session, owner_id, original_id)
    except NotFoundError as exc:
        raise InvalidFieldError(
            "model_id", f"{exc.detail} (model_type {model_type.value!r})"
        ) from None


def _ensure_runner(context: ApiContext, target: Target | None) -> None:
    try:
        context.runners.for_target(target).check_available()
    except RunnerUnavailableError as exc:
        raise ServiceUnavailableError(str(exc)) from None


async def create_deployment(
    session: AsyncSession, context: ApiContext, owner_id: str, spec: DeploymentCreate
) -> DeploymentRow:
    target = resolve_target(spec, context.settings)
    await hold_served_model(session, owner_id, spec.model_id, spec.model_type)
    location = await artifact_location(session, owner_id, spec.model_id, spec.model_type)
    _ensure_runner(context, target)  # before anything exists: nothing half-created
    if (target is None or target.cloud is not Cloud.LOCAL) and not is_object_url(location):
        raise InvalidFieldError(
            "target",
            "cloud deployments load the model from object storage, but this API keeps "
            "artifacts in a local directory; set artifact_store_url to an s3://, gs:// or "
            "az:// URL, or deploy with target.cloud 'local'",
        )
    resolved = spec.model_copy(update={"target": target})
    row = DeploymentRow(
        owner_id=owner_id,
        name=spec.name,
        model_id=spec.model_id,
        model_type=spec.model_type.value,
        deployment_type=spec.deployment_type.value,
        status=S.CREATING.value,
        spec=resolved.model_dump(mode="json", include=set(_SPEC_FIELDS)),
        metadata_=dict(spec.metadata),
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise ConflictError(f"a deployment named {spec.name!r} already exists") from None
    row.runtime = {"stack_name": stack_name_for(row)}
    job = add_job(session, JobKind.DEPLOY, owner_id, row.id, operation=Operation.CREATE.value)
    await session.commit()
    await context.jobs.enqueue(job.id, JobKind.DEPLOY)
    return row


async def get_deployment(session: AsyncSession, owner_id: str, deployment_id: str) -> DeploymentRow:
    row = await session.scalar(
        select(DeploymentRow).where(
            DeploymentRow.id == deployment_id, DeploymentRow.owner_id == owner_id
        )
    )
    if row is None:
        raise NotFoundError(f"deployment {deployment_id} not found")
    return row


async def list_deployments(
    session: AsyncSession, owner_id: str, *, limit: int, offset: int
) -> tuple[list[DeploymentRow], int]:
    """One page of the owner's deployments, newest first, and how many they have in all."""
    rows = await session.scalars(
        select(DeploymentRow)
        .where(DeploymentRow.owner_id == owner_id)
        .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(
        select(func.count()).select_from(DeploymentRow).where(DeploymentRow.owner_id == owner_id)
    )
    return list(rows), int(total or 0)


async def start_operation(
    session: AsyncSession,
    context: ApiContext,
    row: DeploymentRow,
    operation: Operation,
    changes: dict[str, Any] | None = None,
) -> DeploymentRow:
    """Move the deployment, as ``row`` was read, into the operation's running status and queue
    the job that carries it out. 409 if it may not start from its status, or if the deployment
    changed since ``row`` was read (``changes`` were computed from that read)."""
    allowed, running = _TRANSITIONS[operation]
    previous, version = row.status, row.version
    if previous not in allowed:
        raise ConflictError(_conflict_reason(row.id, previous, operation, allowed))
    # Deleting needs the engine too: without it the stack's resources could not be destroyed.
    _ensure_runner(context, to_deployment(row).target)
    values: dict[str, Any] = {
        "status": running.value,
        "status_reason": None,
        "version": version + 1,
        **(changes or {}),
    }
    result = await session.execute(
        update(DeploymentRow)
        .where(
            DeploymentRow.id == row.id,
            DeploymentRow.status == previous,
            DeploymentRow.version == version,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(
            f"deployment {row.id} changed since it was read (another operation ran); read it "
            "again and retry"
        )
    job = add_job(
        session,
        JobKind.DEPLOY,
        row.owner_id,
        row.id,
        operation=operation.value,
        previous_status=previous,
    )
    await session.commit()
    await session.refresh(row)
    await context.jobs.enqueue(job.id, JobKind.DEPLOY)
    return row


def _conflict_reason(
    deployment_id: str,
    status: str,
    operation: Operation,
    allowed: tuple[DeploymentStatus, ...],
) -> str:
    if status in BUSY:
        return f"deployment {deployment_id} is {status}; wait until that operation ends"
    return (
        f"cannot {operation.value} deployment {deployment_id} while it is {status} "
        f"(possible from: {', '.join(s.value for s in allowed)})"
    )


def updated_spec(row: DeploymentRow, changes: DeploymentUpdate) -> dict[str, Any]:
    """The column values a ``PUT`` changes, validated as a whole deployment."""
    current = to_deployment(row)
    patch = changes.model_dump(exclude_none=True, include=set(_SPEC_FIELDS) | {"metadata"})
    merged = Deployment.model_validate({**current.model_dump(), **patch})
    values: dict[str, Any] = {"spec": merged.model_dump(mode="json", include=set(_SPEC_FIELDS))}
    if changes.metadata is not None:
        values["metadata_"] = dict(changes.metadata)
    return values


async def list_events(
    session: AsyncSession, deployment_id: str, *, after_id: int = 0, operation_id: str | None = None
) -> list[DeploymentEventRow]:
    query = select(DeploymentEventRow).where(
        DeploymentEventRow.deployment_id == deployment_id, DeploymentEventRow.id > after_id
    )
    if operation_id:
        query = query.where(DeploymentEventRow.operation_id == operation_id)
    return list(await session.scalars(query.order_by(DeploymentEventRow.id).limit(1000)))


async def restore_local_deployments(context: ApiContext) -> None:
    """After a restart, start the local deployments that were active again (as jobs, so a
    deployment that cannot come back is marked failed with the reason)."""
    async with context.database.session() as session:
        rows = list(
            await session.scalars(
                select(DeploymentRow).where(DeploymentRow.status == S.ACTIVE.value)
            )
        )
        jobs = [
            add_job(
                session, JobKind.DEPLOY, row.owner_id, row.id, operation=Operation.RESTORE.value
            )
            for row in rows
            if (row.spec.get("target") or {}).get("cloud") == Cloud.LOCAL.value
        ]
    for job in jobs:
        await context.jobs.enqueue(job.id, JobKind.DEPLOY)
