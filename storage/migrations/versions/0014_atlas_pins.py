"""atlas_pins: the atlas a study is measured with, chosen by a person (the newest row holds)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'atlas_pins',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('atlas_id', sa.String(length=128), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('synthetic', sa.Boolean(), nullable=False),
        sa.Column('pinned_by', sa.String(length=64), nullable=False),
        sa.Column('pinned_at', sa.DateTime(), nullable=False),
        sa.Column('visits_queued', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_atlas_pins')),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('atlas_pins')
