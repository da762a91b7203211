"""LLM judges: registered OpenAI-compatible endpoints and their verdicts on eval-set outputs

Revision ID: 0011_judges
Revises: 0010_job_process_modules
Create Date: 2026-12-02

A judge is a separate rater (core.evaluate.judges): its pairwise verdicts (both orders) and rubric scores are
stored per output, NULL when unparseable, and are never mixed into the reviewers' figures.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_judges'
down_revision = '0010_job_process_modules'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'judge',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('base_url', sa.String(length=500), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=False),
        sa.Column('api_key_env', sa.String(length=100), nullable=False),
        sa.Column('min_kappa', sa.Float(), server_default='0.6', nullable=False),
        sa.Column('min_items', sa.Integer(), server_default='30', nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('judge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_judge_name'), ['name'], unique=True)
    op.create_table(
        'judgeverdict',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('judge_id', sa.Integer(), nullable=False),
        sa.Column('eval_set_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('prompt_id', sa.Integer(), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('criterion', sa.String(length=100), nullable=False),
        sa.Column('system_a', sa.String(length=64), nullable=False),
        sa.Column('system_b', sa.String(length=64), nullable=False),
        sa.Column('output_a_id', sa.Integer(), nullable=False),
        sa.Column('output_b_id', sa.Integer(), nullable=False),
        sa.Column('raw', sa.Text(), nullable=False),
        sa.Column('verdict', sa.String(length=8), nullable=True),
        sa.Column('score', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['judge_id'], ['judge.id']),
        sa.ForeignKeyConstraint(['eval_set_id'], ['evalset.id']),
        sa.ForeignKeyConstraint(['job_id'], ['job.id']),
        sa.ForeignKeyConstraint(['prompt_id'], ['evalprompt.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('judge_id', 'mode', 'criterion', 'output_a_id', 'output_b_id'),
    )
    with op.batch_alter_table('judgeverdict', schema=None) as batch_op:
        batch_op.create_index('ix_judgeverdict_judge_evalset', ['judge_id', 'eval_set_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('judgeverdict', schema=None) as batch_op:
        batch_op.drop_index('ix_judgeverdict_judge_evalset')
    op.drop_table('judgeverdict')
    with op.batch_alter_table('judge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_judge_name'))
    op.drop_table('judge')
