"""UID columns hold 128 characters: over-long UIDs seen in the field are stored as sent

A valid UID has at most 64 characters (PS3.5 §9.1); some modalities write longer ones. The
node stores such an instance (under a file name derived from the UID's hash) and indexes
the UID unchanged, so the index columns are widened.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = {
    "studies": ("study_instance_uid",),
    "series": ("series_instance_uid", "frame_of_reference_uid"),
    "instances": ("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid"),
    "result_objects": ("sop_instance_uid", "series_instance_uid", "sop_class_uid", "replaces_uid"),
}


def _alter(old: int, new: int) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, existing_type=sa.String(length=old), type_=sa.String(length=new))


def upgrade() -> None:
    """Widen the UID columns to 128 characters."""
    _alter(64, 128)


def downgrade() -> None:
    """Back to 64 (fails where a longer UID is stored, as it should)."""
    _alter(128, 64)
