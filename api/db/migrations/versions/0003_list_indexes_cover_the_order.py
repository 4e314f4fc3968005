"""List indexes cover the whole ``ORDER BY created_at DESC, id DESC`` of the list endpoints,
so a page is read in index order instead of sorting all of an owner's rows.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("models", "deployments")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_owner_created")
            batch.create_index(f"ix_{table}_owner_created_id", ["owner_id", "created_at", "id"])


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_owner_created_id")
            batch.create_index(f"ix_{table}_owner_created", ["owner_id", "created_at"])
