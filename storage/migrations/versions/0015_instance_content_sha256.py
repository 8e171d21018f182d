"""instances.content_sha256: the hash of an instance's data set without its file meta information, so the same
instance re-sent by another path (C-STORE, STOW-RS) is recognised as the same content; empty for rows indexed
before (their whole-file hash still recognises a byte-identical re-send)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('content_sha256')
