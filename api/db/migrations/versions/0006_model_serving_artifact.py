"""models.serving_path and models.sample_data_path: the ONNX a model is served as (a PyTorch
upload is converted once, at upload) and the example inputs uploaded with it.

Models uploaded as ONNX before this revision are served as they are: their ``serving_path`` is
their ``storage_path``. PyTorch models uploaded before it have none (they were converted when
deployed); they must be uploaded again to be deployed.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 500
"""Ids per UPDATE: far below any database's limit on bound parameters."""


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("serving_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sample_data_path", sa.Text(), nullable=True))
    models = sa.table(
        "models",
        sa.column("id", sa.String()),
        sa.column("storage_path", sa.Text()),
        sa.column("serving_path", sa.Text()),
        sa.column("metadata", sa.JSON()),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(models.c.id, models.c.metadata)).all()
    onnx = [
        row.id
        for row in rows
        if isinstance(row.metadata, dict)
        and isinstance(row.metadata.get("signature"), dict)
        and row.metadata["signature"].get("format") == "onnx"
    ]
    for start in range(0, len(onnx), _CHUNK):
        connection.execute(
            sa.update(models)
            .where(models.c.id.in_(onnx[start : start + _CHUNK]))
            .values(serving_path=models.c.storage_path)
        )


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("sample_data_path")
        batch.drop_column("serving_path")
