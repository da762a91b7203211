"""job processes named after what they are: rows name the renamed modules

Revision ID: 0010_job_process_modules
Revises: 0009_preferences
Create Date: 2026-12-02

Every job process now runs through one lifecycle (core.jobs.worker.run_worker) and its module is named after the
job it is: core.train.worker -> core.train.train_job, core.evaluate.generate -> core.evaluate.generate_job,
core.evaluate.draftjob -> core.evaluate.draft_job, core.ship.deploy -> core.ship.export_job (deploy stays the
launcher), core.ship.server -> core.ship.serve_job. Job rows store the module the queue starts (and a resume
starts again), so existing rows are rewritten and old runs still resume.
"""
import sqlalchemy as sa
from alembic import op

revision = '0010_job_process_modules'
down_revision = '0009_preferences'
branch_labels = None
depends_on = None

MODULES = {
    "core.train.worker": "core.train.train_job",
    "core.evaluate.generate": "core.evaluate.generate_job",
    "core.evaluate.draftjob": "core.evaluate.draft_job",
    "core.ship.deploy": "core.ship.export_job",
    "core.ship.server": "core.ship.serve_job",
}


def _rename(pairs) -> None:
    job = sa.table('job', sa.column('module', sa.String))
    for old, new in pairs:
        op.get_bind().execute(job.update().where(job.c.module == old).values(module=new))


def upgrade() -> None:
    _rename(MODULES.items())


def downgrade() -> None:
    _rename((new, old) for old, new in MODULES.items())
