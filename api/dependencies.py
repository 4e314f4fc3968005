"""Dependency providers shared by every controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.middleware import CurrentUser
from api.context import ApiContext

Limit = Annotated[int, Parameter(ge=1, le=1000, description="Page size (extension).")]
Offset = Annotated[
    int,
    # Bounded by what the databases' OFFSET takes (a signed 64-bit integer).
    Parameter(ge=0, le=2**62, description="Rows to skip (extension)."),
]
"""The list endpoints' paging parameters."""


def provide_context(state: State) -> ApiContext:
    context: ApiContext = state.context
    return context


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed after the handler, rolled back if it raised."""
    context: ApiContext = state.context
    async with context.database.session() as session:
        yield session


def provide_current_user(request: Request[CurrentUser, Any, Any]) -> CurrentUser:
    return request.user


dependencies = {
    "context": Provide(provide_context, sync_to_thread=False),
    "db_session": Provide(provide_db_session),
    "current_user": Provide(provide_current_user, sync_to_thread=False),
}
