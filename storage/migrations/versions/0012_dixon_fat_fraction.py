"""Dixon protocols: series kinds dixon_water and dixon_fat; the fat fraction measure (FF)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KINDS_BEFORE = ('t2', 'dwi', 'result', 'other')
KINDS_AFTER = ('t2', 'dwi', 'dixon_water', 'dixon_fat', 'result', 'other')
MODALITIES_BEFORE = ('relT2', 'ADC')
MODALITIES_AFTER = ('relT2', 'ADC', 'FF')
# (table, column, enum name, values before, values after)
CHANGES = (('series', 'kind', 'series_kind', KINDS_BEFORE, KINDS_AFTER),
           ('measurements', 'modality', 'measurement_modality', MODALITIES_BEFORE, MODALITIES_AFTER))


def _enum(name: str, values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=max(map(len, values)))


def _values(table: str, column: str, name: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == 'sqlite':  # no ALTER of a CHECK constraint: the table is copied
        with op.batch_alter_table(table, recreate='always') as batch_op:
            batch_op.alter_column(column, existing_type=_enum(name, old), type_=_enum(name, new),
                                  existing_nullable=False)
        return
    op.drop_constraint(op.f(f'ck_{table}_{name}'), table, type_='check')
    op.alter_column(table, column, type_=sa.String(max(map(len, (*old, *new)))), existing_nullable=False)
    op.create_check_constraint(op.f(f'ck_{table}_{name}'), table,
                               f'{column} IN (' + ', '.join(f"'{v}'" for v in new) + ')')


def upgrade() -> None:
    """Upgrade schema."""
    for table, column, name, before, after in CHANGES:
        _values(table, column, name, before, after)


def downgrade() -> None:
    """Downgrade schema: Dixon series become 'other', fat-fraction measurements are deleted."""
    op.execute("UPDATE series SET kind = 'other' WHERE kind IN ('dixon_water', 'dixon_fat')")
    op.execute("DELETE FROM measurements WHERE modality = 'FF'")
    for table, column, name, before, after in CHANGES:
        _values(table, column, name, after, before)
