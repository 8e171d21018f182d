"""sessions that end (users.session_generation), the bytes of each series kept (series.bytes_stored, filled
from the instances), and the indexes the hot queries use: instances by series in
instance-number order, by SOP class (SEGs sent back), by received_at (received today / this week), the
conflicting versions (partial); the index duplicating the unique (sop_instance_uid, version) one dropped

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bytes_stored', sa.BigInteger(), server_default='0', nullable=False))
    op.execute("UPDATE series SET bytes_stored = (SELECT coalesce(sum(size_bytes), 0) FROM instances "
               "WHERE instances.series_fk = series.id)")
    op.drop_index('ix_instances_sop_instance_uid', table_name='instances')
    op.drop_index('ix_instances_series_fk', table_name='instances')
    op.create_index('ix_instances_series_fk_instance_number', 'instances', ['series_fk', 'instance_number'])
    op.create_index('ix_instances_sop_class_uid', 'instances', ['sop_class_uid'])
    op.create_index('ix_instances_received_at', 'instances', ['received_at'])
    op.create_index('ix_instances_conflict', 'instances', ['series_fk'],
                    sqlite_where=sa.text('conflict = 1'), postgresql_where=sa.text('conflict'))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_instances_conflict', table_name='instances')
    op.drop_index('ix_instances_received_at', table_name='instances')
    op.drop_index('ix_instances_sop_class_uid', table_name='instances')
    op.drop_index('ix_instances_series_fk_instance_number', table_name='instances')
    op.create_index('ix_instances_series_fk', 'instances', ['series_fk'])
    op.create_index('ix_instances_sop_instance_uid', 'instances', ['sop_instance_uid'])
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_column('bytes_stored')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
