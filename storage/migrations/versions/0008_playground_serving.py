"""project settings for the Playground and model cards; exports run as core.ship.deploy

Revision ID: 0008_playground_serving
Revises: 0007_fact_checks
Create Date: 2026-12-02

Projects get a default system prompt (the Playground starts every chat with it), a license and an intended-use
text (every export's model card carries them). The export job moved up into the ship stage with the parity check
and the model card, so export rows that name the old worker module are rewritten.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_playground_serving'
down_revision = '0007_fact_checks'
branch_labels = None
depends_on = None

OLD, NEW = "core.train.export", "core.ship.deploy"


def upgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('default_system_prompt', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('license', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('intended_use', sa.Text(), nullable=False, server_default=''))
    job = sa.table('job', sa.column('module', sa.String))
    op.get_bind().execute(job.update().where(job.c.module == OLD).values(module=NEW))


def downgrade() -> None:
    job = sa.table('job', sa.column('module', sa.String))
    op.get_bind().execute(job.update().where(job.c.module == NEW).values(module=OLD))
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('intended_use')
        batch_op.drop_column('license')
        batch_op.drop_column('default_system_prompt')
