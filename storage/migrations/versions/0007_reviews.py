"""reviews: a reviewer's decisions on a visit and its muscle x side ROIs (accepted / rejected, with a reason)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('visit_fk', sa.Integer(), nullable=False),
    sa.Column('muscle', sa.String(length=64), nullable=True),
    sa.Column('side', sa.Enum('left', 'right', 'none', name='review_side', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('verdict', sa.Enum('accepted', 'rejected', name='review_verdict', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('reason', sa.Enum('misregistered', 'artefact', 'not_covered', 'other', name='reject_reason', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.Column('organisation', sa.String(length=64), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("(verdict = 'rejected') = (reason IS NOT NULL)", name=op.f('ck_reviews_reason_iff_rejected')),
    sa.CheckConstraint('(muscle IS NULL) = (side IS NULL)', name=op.f('ck_reviews_muscle_with_side')),
    sa.ForeignKeyConstraint(['visit_fk'], ['visits.id'], name=op.f('fk_reviews_visit_fk_visits'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_visit_fk'), ['visit_fk'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviews_visit_fk'))

    op.drop_table('reviews')
