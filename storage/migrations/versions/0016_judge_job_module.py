"""the judge's process is core.evaluate.judge_job, named like every other job process

Revision ID: 0016_judge_job_module
Revises: 0015_prompted_and_rag_systems
Create Date: 2026-12-02

0010 renamed the job processes after what they are (train_job, generate_job, draft_job, export_job, serve_job);
the judge came later as judgejob. Job rows store the module the queue starts and a resume starts again, so the
judge's rows are rewritten and old judge jobs still resume.
"""
import sqlalchemy as sa
from alembic import op

revision = '0016_judge_job_module'
down_revision = '0015_prompted_and_rag_systems'
branch_labels = None
depends_on = None


def _rename(old: str, new: str) -> None:
    job = sa.table('job', sa.column('module', sa.String))
    op.get_bind().execute(job.update().where(job.c.module == old).values(module=new))


def upgrade() -> None:
    _rename("core.evaluate.judgejob", "core.evaluate.judge_job")


def downgrade() -> None:
    _rename("core.evaluate.judge_job", "core.evaluate.judgejob")
