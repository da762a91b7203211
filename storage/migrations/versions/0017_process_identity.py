"""a job's process is known by its boot and start ticks, not only by its wall-clock create time

Revision ID: 0017_process_identity
Revises: 0016_judge_job_module
Create Date: 2026-12-03

psutil's create time is the kernel's boot time plus the process's start ticks, and the kernel moves its boot time
when the wall clock steps (NTP, a paused or snapshotted VM): a 10 s step made reconcile fail a generation job whose
process ran on. Job.pid_ident (core.jobs.processes.identity) does not move; rows without it (jobs started before
this revision) are still told by their create time.
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0017_process_identity'
down_revision = '0016_judge_job_module'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        batch_op.add_column(sa.Column("pid_ident", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job') as batch_op:
        batch_op.drop_column('pid_ident')
