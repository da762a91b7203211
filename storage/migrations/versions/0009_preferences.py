"""preference versions: frozen (prompt, chosen, rejected) pairs that DPO runs train on

Revision ID: 0009_preferences
Revises: 0008_playground_serving
Create Date: 2026-11-29

A preference version is built from an eval set's blind votes, from an imported preference file, or both, and is
frozen like a dataset version: a DPO run names it in its config and it never changes afterwards.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_preferences'
down_revision = '0008_playground_serving'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'preferenceversion',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('n_pairs', sa.Integer(), nullable=False),
        sa.Column('sources', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['user.id']),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'name'),
    )
    with op.batch_alter_table('preferenceversion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_preferenceversion_project_id'), ['project_id'], unique=False)
    op.create_table(
        'preferencepair',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('prompt', sa.JSON(), nullable=False),
        sa.Column('chosen', sa.JSON(), nullable=False),
        sa.Column('rejected', sa.JSON(), nullable=False),
        sa.Column('eval_set_id', sa.Integer(), nullable=True),
        sa.Column('eval_prompt_id', sa.Integer(), nullable=True),
        sa.Column('source_file', sa.String(length=300), nullable=False),
        sa.Column('source_line', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['version_id'], ['preferenceversion.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('preferencepair', schema=None) as batch_op:
        batch_op.create_index('ix_prefpair_version', ['version_id', 'position'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('preferencepair', schema=None) as batch_op:
        batch_op.drop_index('ix_prefpair_version')
    op.drop_table('preferencepair')
    with op.batch_alter_table('preferenceversion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_preferenceversion_project_id'))
    op.drop_table('preferenceversion')
