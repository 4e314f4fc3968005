"""The migrations build exactly the schema the table definitions describe, on SQLite and on
PostgreSQL: after ``upgrade head``, Alembic's autogenerate comparison finds nothing to change
(a column added to a table without its migration, or the other way round, fails here)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from aideploy.settings import Settings
from api.db.engine import Database
from api.db.tables import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_matches_the_tables(settings: Settings) -> None:
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        async with database.engine.connect() as connection:
            differences = await connection.run_sync(_differences)
            tables = await connection.run_sync(lambda sync: sync.dialect.get_table_names(sync))
    finally:
        await database.dispose()
    assert {"users", "models", "deployments", "jobs"} <= set(tables)
    assert differences == []
