"""``POST /auth/token``: exchange a username and password for a signed bearer token; and
``POST /auth/users``: administrators create accounts over HTTP."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import AccessToken, TokenRequest
from api.auth.middleware import CurrentUser
from api.auth.schemas import User, UserCreate
from api.auth.service import UserExistsError, authenticate, create_user
from api.context import ApiContext
from api.errors import ConflictError, TooManyRequestsError, documented_errors


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/token",
        responses=documented_errors(401, 422, 429),
        operation_id="CreateToken",
        exclude_from_auth=True,
        status_code=200,
        security=[],
    )
    async def create_token(
        self,
        request: Request,  # type: ignore[type-arg]
        data: JSONBody[TokenRequest],
        db_session: NamedDependency[AsyncSession],
        context: NamedDependency[ApiContext],
    ) -> AccessToken:
        """Issue a token for valid credentials; repeated failures from one client address are
        throttled (429), for that address only."""
        address = request.client.host if request.client else "unknown"
        limiter = context.login_limiter
        wait = limiter.retry_after(data.username, address)
        if wait:
            raise TooManyRequestsError(
                f"too many failed login attempts; retry in {wait} seconds", wait
            )
        limiter.record_attempt(data.username, address)
        try:
            user = await authenticate(db_session, data.username, data.password)
        except BaseException:
            limiter.take_back(data.username, address)
            raise
        if user is None:
            raise NotAuthorizedException("invalid username or password")
        limiter.succeeded(data.username, address)
        token, claims = context.signer.sign(user.id)
        return AccessToken(token=token, expires_at=claims.expires_at)

    @post(
        "/users",
        operation_id="CreateUser",
        responses=documented_errors(401, 403, 409, 422),
        status_code=201,
    )
    async def create_user(
        self,
        data: JSONBody[UserCreate],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[CurrentUser],
    ) -> User:
        """*Extension*: create a user (administrators only; others get 403)."""
        if not current_user.is_admin:
            raise PermissionDeniedException("only administrators create users")
        try:
            user = await create_user(
                db_session, data.username, data.password, is_admin=data.is_admin
            )
        except UserExistsError as exc:
            raise ConflictError(str(exc)) from None
        return User(
            id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at
        )
