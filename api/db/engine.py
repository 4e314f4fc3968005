"""The async engine and sessions, and the Alembic upgrade that runs at start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy import exc as sql_errors
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from aideploy.errors import AideployError, InputError
from aideploy.settings import mask_url

_MIGRATIONS = Path(__file__).parent / "migrations"
_CONNECT_TIMEOUT_SECONDS = 10


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no ``alembic.ini`` to keep in sync."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    """SQLite ignores ``ON DELETE CASCADE`` unless asked per connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class DatabaseUnavailableError(AideployError):
    """The database cannot be reached or migrated; the message names the URL and the cause."""


def async_database_url(url: str) -> str:
    """``url`` with the async driver the API uses (``postgresql://`` works as written)."""
    scheme, separator, rest = url.partition("://")
    driver = _ASYNC_DRIVERS.get(scheme)
    if not separator or driver is None:
        raise InputError(
            f"database_url: unsupported URL {scheme or url!r}; use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        )
    return f"{driver}://{rest}"


class Database:
    """One engine per process; sessions for requests and for background jobs alike."""

    def __init__(self, url: str) -> None:
        url = async_database_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # SQL parameters carry user data and secrets: never in error messages or logs.
        options: dict[str, Any] = {"hide_parameters": True}
        if self.is_sqlite:
            options["connect_args"] = {"timeout": 30}
            _ensure_sqlite_directory(url)
        else:
            options["pool_pre_ping"] = True
            # A database that stops answering (no refusal) is a 503 after this, not a hang.
            options["connect_args"] = {"timeout": _CONNECT_TIMEOUT_SECONDS}
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _enable_sqlite_foreign_keys)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; runs at every start-up)."""
        try:
            async with self.engine.begin() as connection:
                await connection.run_sync(_upgrade_to_head)
        except (OSError, SQLAlchemyError) as exc:
            cause = getattr(exc, "orig", None) or exc
            raise DatabaseUnavailableError(
                f"database_url: cannot use {mask_url(self.url)} ({type(cause).__name__}: {cause})"
            ) from exc

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block succeeds, rolled back when it raises."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade_to_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _ensure_sqlite_directory(url: str) -> None:
    _, _, path = url.partition(":///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def database_unreachable(exc: BaseException) -> bool:
    """A lost, refused or timed-out database connection: it heals when the database is back.
    (asyncpg raises a bare ``ConnectionRefusedError`` when the pool cannot reconnect.)"""
    if isinstance(exc, sql_errors.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        ConnectionError
        | sql_errors.OperationalError
        | sql_errors.InterfaceError
        | sql_errors.TimeoutError,
    )
