"""compute targets: Ray and Slurm clusters a job may run on instead of this machine

Revision ID: 0013_compute_targets
Revises: 0012_pilots
Create Date: 2026-12-02

An admin registers a compute target (its kind and settings); a job that names one is submitted to that cluster
instead of started as a local process, and keeps the cluster's job id and its last known state and reason.
"""
import sqlalchemy as sa
from alembic import op

revision = '0013_compute_targets'
down_revision = '0012_pilots'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'computetarget',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('settings', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('computetarget', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_computetarget_name'), ['name'], unique=True)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('external_id', sa.String(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('remote_state', sa.String(length=32), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('remote_reason', sa.Text(), nullable=False, server_default=''))
        batch_op.create_foreign_key('fk_job_target_id', 'computetarget', ['target_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint('fk_job_target_id', type_='foreignkey')
        batch_op.drop_column('remote_reason')
        batch_op.drop_column('remote_state')
        batch_op.drop_column('external_id')
        batch_op.drop_column('target_id')
    with op.batch_alter_table('computetarget', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_computetarget_name'))
    op.drop_table('computetarget')
