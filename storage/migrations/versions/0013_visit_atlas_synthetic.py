"""visits.atlas_synthetic: the visit was measured with an atlas drawn from synthetic (phantom) subjects; empty for
visits not processed since

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('atlas_synthetic', sa.Boolean(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.drop_column('atlas_synthetic')
