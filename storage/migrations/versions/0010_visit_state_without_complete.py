"""a visit's states as storage/visit_states.py moves them: 'complete' (never set by the node) gone; a visit left
in it is queued

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BEFORE = ('receiving', 'complete', 'queued', 'processing', 'processed', 'failed')
AFTER = ('receiving', 'queued', 'processing', 'processed', 'failed')


def _enum(values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name='visit_state', native_enum=False, create_constraint=True, length=10)


def _states(values: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == 'sqlite':  # no ALTER of a CHECK constraint: the table is copied
        with op.batch_alter_table('visits', recreate='always') as batch_op:
            batch_op.alter_column('state', existing_type=_enum(BEFORE if values == AFTER else AFTER),
                                  type_=_enum(values), existing_nullable=False)
        return
    op.drop_constraint(op.f('ck_visits_visit_state'), 'visits', type_='check')
    op.create_check_constraint(op.f('ck_visits_visit_state'), 'visits',
                               'state IN (' + ', '.join(f"'{v}'" for v in values) + ')')


def upgrade() -> None:
    """Upgrade schema."""
    op.execute("UPDATE visits SET state = 'queued' WHERE state = 'complete'")
    _states(AFTER)


def downgrade() -> None:
    """Downgrade schema."""
    _states(BEFORE)
