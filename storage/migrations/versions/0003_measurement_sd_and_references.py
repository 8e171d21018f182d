"""measurements: SD of the muscle signal and the reference marrow used per station

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the columns."""
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("references", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_column("references")
        batch_op.drop_column("sd")
