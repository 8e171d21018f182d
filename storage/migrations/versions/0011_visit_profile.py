"""the protocol profile a visit was measured with (visits.profile): which catalogue muscles it covers; empty for
visits not processed since (they were measured whole-body)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('profile', sa.Enum('whole_body', 'lower_limbs', 'calves', name='scan_profile',
                                                         native_enum=False, create_constraint=True, length=11),
                                      nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.drop_column('profile')
