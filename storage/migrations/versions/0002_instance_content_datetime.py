"""instances: Content Date and Time, so Q/R can mark the newest of re-made results

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add instances.content_date and instances.content_time."""
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_date", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("content_time", sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("content_time")
        batch_op.drop_column("content_date")
