"""instances: Content Date/Time (Q/R marks the newest results) and station key, b-values, derived flag (exam completeness)

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
    """Add the columns."""
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_date", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("content_time", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("station_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("b_values", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("derived", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("derived")
        batch_op.drop_column("b_values")
        batch_op.drop_column("station_key")
        batch_op.drop_column("content_time")
        batch_op.drop_column("content_date")
