"""Bearer-token authentication for every route but the token endpoint and the schema."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import select

from api.auth.tokens import InvalidTokenError
from api.context import ApiContext
from api.db.tables import UserRow


@dataclass(frozen=True)
class CurrentUser:
    id: str
    username: str
    is_admin: bool


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                "missing bearer token: send 'Authorization: Bearer <token>'"
            )
        context: ApiContext = connection.app.state.context
        try:
            claims = context.signer.verify(token.strip())
        except InvalidTokenError as exc:
            raise NotAuthorizedException(
                f"invalid token ({exc}); get a new one at /auth/token"
            ) from None
        async with context.database.sessions() as session:
            user = await session.scalar(select(UserRow).where(UserRow.id == claims.user_id))
        if user is None:
            raise NotAuthorizedException("invalid token (the user no longer exists)")
        return AuthenticationResult(
            user=CurrentUser(user.id, user.username, user.is_admin), auth=claims
        )
