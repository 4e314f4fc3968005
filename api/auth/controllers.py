"""``POST /auth/token``: exchange a username and password for a signed bearer token."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import AccessToken, TokenRequest
from api.auth.service import authenticate
from api.context import ApiContext
from api.errors import TooManyRequestsError


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/token",
        operation_id="CreateToken",
        exclude_from_auth=True,
        status_code=200,
        security=[],
    )
    async def create_token(
        self,
        request: Request,  # type: ignore[type-arg]
        data: TokenRequest,
        db_session: AsyncSession,
        context: ApiContext,
    ) -> AccessToken:
        """Issue a token for valid credentials; repeated failures are throttled (429)."""
        client = request.client.host if request.client else "unknown"
        keys = (f"user:{data.username}", f"ip:{client}")
        wait = context.login_limiter.retry_after(*keys)
        if wait:
            raise TooManyRequestsError(
                f"too many failed login attempts; retry in {wait} seconds", wait
            )
        user = await authenticate(db_session, data.username, data.password)
        if user is None:
            context.login_limiter.record_failure(*keys)
            raise NotAuthorizedException("invalid username or password")
        context.login_limiter.reset(f"user:{data.username}")
        token, claims = context.signer.sign(user.id)
        return AccessToken(token=token, expires_at=claims.expires_at)
