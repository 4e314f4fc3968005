"""``/deployments``: create, list, get, update, delete, hibernate, activate, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import Deployment, DeploymentCreate, DeploymentUpdate, Message
from api.auth.middleware import CurrentUser
from api.context import ApiContext
from api.db.tables import DeploymentEventRow, DeploymentRow
from api.dependencies import PAGE_HEADERS, Page
from api.deployments import service
from api.deployments.schemas import DeploymentEvent
from api.deployments.service import BUSY, Operation
from api.errors import documented_errors

_POLL_SECONDS = 0.25


def _event(row: DeploymentEventRow) -> DeploymentEvent:
    return DeploymentEvent(
        id=row.id,
        operation_id=row.operation_id,
        kind=row.kind,
        message=row.message,
        data=row.data,
        created_at=row.created_at,
    )


class DeploymentController(Controller):
    path = "/deployments"
    tags = ["deployments"]

    @get(
        operation_id="ListDeployments",
        responses=documented_errors(401, 422),
        response_headers=PAGE_HEADERS,
    )
    async def list_deployments(
        self,
        request: Request[CurrentUser, Any, Any],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        page: NamedDependency[Page],
    ) -> Response[Sequence[Deployment]]:
        """The caller's deployments, newest first, a page at a time (``X-Total-Count`` and
        ``Link`` headers tell what else there is)."""
        rows, total = await service.list_deployments(
            db_session, current_user.id, limit=page.limit, offset=page.offset
        )
        return page.respond(request, [service.to_deployment(row) for row in rows], total)

    @get(
        "/{deployment_id:str}", operation_id="GetDeployment", responses=documented_errors(401, 404)
    )
    async def get_deployment(
        self,
        deployment_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
    ) -> Deployment:
        """One deployment; ``status_reason`` says why it failed."""
        row = await service.get_deployment(db_session, current_user.id, deployment_id)
        return service.to_deployment(row)

    @post(
        operation_id="CreateDeployment",
        responses=documented_errors(401, 409, 422, 503),
        status_code=202,
    )
    async def create_deployment(
        self,
        data: JSONBody[DeploymentCreate],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> Deployment:
        """Create a deployment; answers at once with status ``creating``, which becomes
        ``active`` (with ``endpoint``) or ``failed`` (with ``status_reason``)."""
        row = await service.create_deployment(db_session, context, current_user.id, data)
        return service.to_deployment(row)

    @put(
        "/{deployment_id:str}",
        operation_id="UpdateDeployment",
        responses=documented_errors(401, 404, 409, 422, 503),
        status_code=202,
    )
    async def update_deployment(
        self,
        deployment_id: FromPath[str],
        data: JSONBody[DeploymentUpdate],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> Deployment:
        """Change resources, scaling, cost policy or metadata; status ``updating`` until
        applied (409 while another operation runs)."""
        row = await service.get_deployment(db_session, current_user.id, deployment_id)
        changes = service.updated_spec(row, data)
        row = await service.start_operation(db_session, context, row, Operation.UPDATE, changes)
        return service.to_deployment(row)

    @delete(
        "/{deployment_id:str}",
        operation_id="DeleteDeployment",
        responses=documented_errors(401, 404, 409),
        status_code=202,
    )
    async def delete_deployment(
        self,
        deployment_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> Message:
        """Destroy the deployment's resources and stack; it disappears once done."""
        row = await service.get_deployment(db_session, current_user.id, deployment_id)
        await service.start_operation(db_session, context, row, Operation.DELETE)
        return Message(message=f"Deployment {deployment_id} is being deleted")

    @post(
        "/{deployment_id:str}/hibernate",
        operation_id="HibernateDeployment",
        responses=documented_errors(401, 404, 409, 503),
        status_code=202,
    )
    async def hibernate_deployment(
        self,
        deployment_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> Message:
        """Scale to zero: ``hibernating`` then ``hibernated``; the endpoint is kept."""
        row = await service.get_deployment(db_session, current_user.id, deployment_id)
        await service.start_operation(db_session, context, row, Operation.HIBERNATE)
        return Message(message=f"Deployment {deployment_id} is hibernating")

    @post(
        "/{deployment_id:str}/activate",
        operation_id="ActivateDeployment",
        responses=documented_errors(401, 404, 409, 503),
        status_code=202,
    )
    async def activate_deployment(
        self,
        deployment_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
    ) -> Message:
        """Wake a hibernated deployment: ``activating`` then ``active`` on the same endpoint."""
        row = await service.get_deployment(db_session, current_user.id, deployment_id)
        await service.start_operation(db_session, context, row, Operation.ACTIVATE)
        return Message(message=f"Deployment {deployment_id} is activating")

    @get(
        "/{deployment_id:str}/events",
        operation_id="ListDeploymentEvents",
        responses=documented_errors(401, 404, 422),
        media_type="application/json",
    )
    async def list_events(
        self,
        request: Request[CurrentUser, Any, Any],
        deployment_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
        context: NamedDependency[ApiContext],
        after: Annotated[
            # Event ids are 32-bit integers on PostgreSQL.
            int, Parameter(ge=0, le=2**31 - 1, description="Only events after this id.")
        ] = 0,
        operation_id: Annotated[
            str | None, Parameter(description="Only this operation's events.")
        ] = None,
    ) -> Response[list[DeploymentEvent]] | ServerSentEvent:
        """*Extension*: the engine events of the deployment's operations. With ``Accept:
        text/event-stream`` they stream as server-sent events until the running operation
        ends."""
        await service.get_deployment(db_session, current_user.id, deployment_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            return ServerSentEvent(_stream(context, deployment_id, after, operation_id))
        rows = await service.list_events(
            db_session, deployment_id, after_id=after, operation_id=operation_id
        )
        return Response([_event(row) for row in rows])


async def _stream(
    context: ApiContext, deployment_id: str, after: int, operation_id: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    """Recorded events, then new ones as they are written, until no operation is running.

    It polls the table (cheap, indexed), so it works whichever replica runs the job.
    """
    last_id = after
    while True:
        async with context.database.sessions() as session:
            rows = await service.list_events(
                session, deployment_id, after_id=last_id, operation_id=operation_id
            )
            row = await session.get(DeploymentRow, deployment_id)
            running = row is not None and row.status in BUSY
        for event_row in rows:
            last_id = event_row.id
            yield ServerSentEventMessage(
                data=_event(event_row).model_dump_json(), event=event_row.kind, id=str(event_row.id)
            )
        if not running and not rows:
            status = "deleted" if row is None else row.status
            yield ServerSentEventMessage(data=status, event="end")
            return
        await asyncio.sleep(_POLL_SECONDS)
