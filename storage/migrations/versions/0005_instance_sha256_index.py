"""An index on instances.sha256: the ingest journal reconciles kept entries with the index by content

On start the indexer asks which of the journal's recently indexed entries (named by their
SHA-256) the index lacks — an index restored from an older file, a transaction a disk lost —
and indexes those again (storage/journal.py, node/intake/indexer.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

"""
from typing import Sequence, Union

from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_instances_sha256", "instances", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_instances_sha256", table_name="instances")
