"""Row locks that hold on both databases until the transaction ends.

Two requests that each check and then write (delete a model that no deployment uses; create a
deployment of a model that exists) must not both pass their check. On PostgreSQL the row is
locked with ``SELECT ... FOR UPDATE`` (or ``FOR SHARE`` for readers that only need it to stay);
SQLite has no row locks, so the lock is its database write lock, taken by a no-op ``UPDATE`` of
the row (SQLite runs one writer at a time; the checks that follow read the newest data).
Call it before the check, and check with fresh statements after it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession


async def lock_row(session: AsyncSession, entity: Any, *conditions: Any, shared: bool) -> bool:
    """Lock the row of ``entity`` (a mapped class with ``id`` and ``updated_at``) matching
    ``conditions`` for the rest of the transaction; ``False`` when there is no such row.
    ``shared`` lets other shared holders in (``FOR SHARE``) on PostgreSQL."""
    if session.get_bind().dialect.name == "sqlite":
        result = await session.execute(
            update(entity)
            .where(*conditions)
            .values(id=entity.id, updated_at=entity.updated_at)  # changes nothing, not even this
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
    found = await session.scalar(select(entity.id).where(*conditions).with_for_update(read=shared))
    return found is not None
