"""facts to check per project, automatic checks per eval prompt

Revision ID: 0007_fact_checks
Revises: 0006_pending_imports
Create Date: 2026-11-30

An eval prompt carries the checks a domain expert wrote for it (must contain, must not contain, regular expression,
length bounds); a project carries its "facts to check", from which checks are made for prompts whose reference
answer gives the fact. Both start empty on existing rows.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_fact_checks'
down_revision = '0006_pending_imports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('facts', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('evalprompt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checks', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('evalprompt', schema=None) as batch_op:
        batch_op.drop_column('checks')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('facts')
