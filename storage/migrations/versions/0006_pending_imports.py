"""imports write in short batches: an import's rows stay hidden while its record is pending

Revision ID: 0006_pending_imports
Revises: 0005_sessions_throttle_example_history
Create Date: 2026-11-29

A long import used to be one write transaction that locked out every other writer for its whole length. Its
rows are now inserted in short transactions while the ImportRecord is "pending" (queries skip them), and one
quick update of the record to "done" shows them all. Imports recorded before this are done.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_pending_imports'
down_revision = '0005_sessions_throttle_example_history'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('importrecord', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='done'))


def downgrade() -> None:
    conn = op.get_bind()
    # Rows of unfinished imports were never visible: they go with the column that hid them.
    pending = sa.text("SELECT id FROM importrecord WHERE status = 'pending'")
    ids = [row[0] for row in conn.execute(pending)]
    for import_id in ids:
        conn.execute(sa.text("DELETE FROM example WHERE import_id = :i"), {"i": import_id})
        conn.execute(sa.text("DELETE FROM importrecord WHERE id = :i"), {"i": import_id})
    with op.batch_alter_table('importrecord', schema=None) as batch_op:
        batch_op.drop_column('status')
