"""Every error the API answers, in one JSON shape, mapped in one place.

``{"status_code": 422, "detail": "...", "errors": [{"field": "...", "message": "..."}]}``.
Services raise :class:`ApiError` subclasses (or aideploy's own user errors); anything else is a
bug: it is logged with its traceback and answered with a generic 500 body.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    ValidationException,
)
from litestar.openapi import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_507_INSUFFICIENT_STORAGE,
)
from litestar.types import ExceptionHandlersMap
from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sql_errors

from aideploy.errors import AideployError, InputError
from aideploy.schema import FieldError, field_errors
from api.db.engine import database_unreachable

__all__ = [
    "ApiError",
    "ConflictError",
    "ErrorBody",
    "InvalidFieldError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServiceUnavailableError",
    "TooManyRequestsError",
    "documented_errors",
    "exception_handlers",
]

log = logging.getLogger("aideploy.api")


class ErrorBody(BaseModel):
    """The body of every error response."""

    status_code: int
    detail: str
    errors: list[FieldError] = []


class ApiError(Exception):
    """An error with its HTTP status, a one-line detail and optional per-field errors."""

    status_code = HTTP_400_BAD_REQUEST

    def __init__(
        self,
        detail: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


class NotFoundError(ApiError):
    status_code = HTTP_404_NOT_FOUND


class ConflictError(ApiError):
    status_code = HTTP_409_CONFLICT


class PayloadTooLargeError(ApiError):
    status_code = HTTP_413_REQUEST_ENTITY_TOO_LARGE


class InvalidFieldError(ApiError):
    """A well-formed request whose field does not fit (422), naming the field."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", [FieldError(field=field, message=message)])

    @classmethod
    def from_validation(cls, exc: ValidationError) -> InvalidFieldError:
        """Every problem pydantic found, the first one in the detail line."""
        errors = field_errors(exc)
        error = cls(errors[0].field, errors[0].message)
        error.errors = errors
        error.detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return error


class TooManyRequestsError(ApiError):
    status_code = HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))})


class ServiceUnavailableError(ApiError):
    status_code = HTTP_503_SERVICE_UNAVAILABLE


_DESCRIPTIONS = {
    400: "The request is malformed (not JSON, not multipart, wrong parameter type).",
    401: "Missing, invalid or expired bearer token, or wrong credentials.",
    403: "Authenticated, but not allowed.",
    404: "No such resource among the caller's own.",
    409: "Conflicts with the resource's state (an operation running, in use, a taken name).",
    413: "The upload is larger than max_upload_bytes.",
    422: "A field does not fit; ``errors`` names each one.",
    429: "Too many failed logins; retry after the Retry-After seconds.",
    503: "A dependency is missing or failing (the database, the Pulumi CLI, the model "
    "checker); retry later.",
    507: "The server's disk is full; nothing of the upload was kept.",
}


def documented_errors(*status_codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the errors a route answers, all with :class:`ErrorBody`. Every route
    documented here reads the database, so every one may answer 503 while it is unreachable."""
    codes = sorted({400, 503, *status_codes})
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=_DESCRIPTIONS[code], generate_examples=False
        )
        for code in codes
    }


def _respond(
    status_code: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status_code, detail=detail, errors=errors or []),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    return _respond(exc.status_code, exc.detail, exc.errors, exc.headers)


def _user_error(_: Request[Any, Any, Any], exc: AideployError) -> Response[ErrorBody]:
    """Invalid input is 422; a valid request for something unsupported is 400."""
    status = HTTP_422_UNPROCESSABLE_ENTITY if isinstance(exc, InputError) else HTTP_400_BAD_REQUEST
    return _respond(status, str(exc))


def _pydantic_error(_: Request[Any, Any, Any], exc: ValidationError) -> Response[ErrorBody]:
    errors = field_errors(exc)
    detail = "; ".join(f"{error.field}: {error.message}" for error in errors)
    return _respond(HTTP_422_UNPROCESSABLE_ENTITY, detail or "invalid request", errors)


def _litestar_validation_error(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[ErrorBody]:
    """Litestar's request parsing errors; their ``key`` is ``body.x.y`` or a parameter name."""
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field = str(item.get("key") or item.get("source") or "body")
            message = str(item.get("message", "invalid")).removeprefix("Value error, ")
            errors.append(FieldError(field=field, message=message))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or str(exc.detail)
    status = HTTP_422_UNPROCESSABLE_ENTITY if errors else HTTP_400_BAD_REQUEST
    return _respond(status, detail, errors)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", "Bearer")
    return _respond(exc.status_code, str(exc.detail), headers=headers)


_DATABASE_DOWN = "a service the API depends on (the database) is unreachable; retry shortly"
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"


def _database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """A lost, refused or unanswered database connection is a 503 (it recovers by itself when
    the database returns: the pool pings connections before use); a value the database refuses
    to store (PostgreSQL's class 22, data exceptions) is the request's 422; SQLite's full disk is
    a 507; any other database error is a bug."""
    cause = getattr(exc, "orig", None)
    if getattr(cause, "sqlite_errorcode", None) == _SQLITE_FULL:
        return _disk_full(request, exc)
    sqlstate = str(getattr(cause, "sqlstate", None) or "")
    if sqlstate.startswith("22"):
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else sqlstate
        log.info("refused value answering %s %s: %s", request.method, request.url.path, reason)
        return _respond(
            HTTP_422_UNPROCESSABLE_ENTITY,
            f"a value of the request cannot be stored ({reason}); check text for NUL or control "
            "characters and numbers for their range",
        )
    # A connect timeout (a database that accepts but never answers) can arrive unwrapped.
    if not (isinstance(exc, TimeoutError) or database_unreachable(exc)):
        return _unexpected_error(request, exc)
    log.warning("unreachable answering %s %s: %s", request.method, request.url.path, exc)
    return _respond(HTTP_503_SERVICE_UNAVAILABLE, _DATABASE_DOWN)


def _disk_full(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.error("disk full answering %s %s: %s", request.method, request.url.path, exc)
    return _respond(
        HTTP_507_INSUFFICIENT_STORAGE,
        "the server's disk is full; nothing was kept, retry once space is freed",
    )


def _os_error(request: Request[Any, Any, Any], exc: OSError) -> Response[ErrorBody]:
    """A full disk is a 507 (whatever was being written has been removed by its writer); a
    refused, cut or unanswered connection (asyncpg's connect timeout is a plain TimeoutError) is
    the database's 503; anything else is a bug."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_full(request, exc)
    if isinstance(exc, ConnectionError | TimeoutError):
        return _database_error(request, exc)
    return _unexpected_error(request, exc)


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception(
        "unexpected error answering %s %s", request.method, request.url.path, exc_info=exc
    )
    return _respond(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal error; the server log has the details",
    )


exception_handlers: ExceptionHandlersMap = {
    ApiError: _api_error,
    AideployError: _user_error,
    ValidationError: _pydantic_error,
    ValidationException: _litestar_validation_error,
    HTTPException: _http_error,
    OSError: _os_error,
    sql_errors.DBAPIError: _database_error,
    sql_errors.TimeoutError: _database_error,
    Exception: _unexpected_error,
}
