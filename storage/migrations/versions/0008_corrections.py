"""corrections: segmentations a person corrected on a workstation and sent back (applied or refused, why),
and measurements.source (automatic | corrected; both kept, one row each)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('corrections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance_fk', sa.Integer(), nullable=False),
    sa.Column('visit_fk', sa.Integer(), nullable=True),
    sa.Column('state', sa.Enum('pending', 'applied', 'refused', name='correction_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('manufacturer', sa.String(length=64), nullable=True),
    sa.Column('muscles', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('applied_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['instance_fk'], ['instances.id'], name=op.f('fk_corrections_instance_fk_instances'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['visit_fk'], ['visits.id'], name=op.f('fk_corrections_visit_fk_visits'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_corrections')),
    sa.UniqueConstraint('instance_fk', name=op.f('uq_corrections_instance_fk'))
    )
    with op.batch_alter_table('corrections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_corrections_visit_fk'), ['visit_fk'], unique=False)

    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.Enum('automatic', 'corrected', name='measurement_source', native_enum=False, create_constraint=True), server_default='automatic', nullable=False))
        batch_op.drop_constraint(batch_op.f('uq_measurements_visit_fk_modality_muscle_side'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_measurements_visit_fk_modality_muscle_side_source'), ['visit_fk', 'modality', 'muscle', 'side', 'source'])



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_measurements_visit_fk_modality_muscle_side_source'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_measurements_visit_fk_modality_muscle_side'), ['visit_fk', 'modality', 'muscle', 'side'])
        batch_op.drop_column('source')

    with op.batch_alter_table('corrections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_corrections_visit_fk'))

    op.drop_table('corrections')
