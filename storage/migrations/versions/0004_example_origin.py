"""examples remember where they came from: an origin record (e.g. a blind-review send-back)

Revision ID: 0004_example_origin
Revises: 0003_jobs_by_stage
Create Date: 2026-11-29

A draft sent back from blind review used to carry its reviewer's comment squeezed into the one-line note,
with nothing to trace it by. ``origin`` keeps the eval set, prompt, reviewer, the reviewer's whole comment,
what the draft started from and whether the prompt is a test-split example, so it can be traced and warned
about. Existing rows get an empty origin ({}: imported or written by hand).
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_example_origin'
down_revision = '0003_jobs_by_stage'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('example', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('example', schema=None) as batch_op:
        batch_op.drop_column('origin')
