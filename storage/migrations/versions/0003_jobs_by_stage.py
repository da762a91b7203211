"""jobs know nothing of the stages: action, slots and launcher on the row; worker modules by stage

Revision ID: 0003_jobs_by_stage
Revises: 0002_curation_training_evaluation
Create Date: 2026-11-29

The job queue used to read a training run's config (num_gpus, launcher) and map job kinds to roles; the row now
carries them. Workers moved with the code into stage packages (core.train -> core.train.worker,
core.generate -> core.evaluate.generate), so existing rows are rewritten and old runs still resume.
"""
import json

import sqlalchemy as sa
from alembic import op

revision = '0003_jobs_by_stage'
down_revision = '0002_curation_training_evaluation'
branch_labels = None
depends_on = None

MODULES = {"core.train": "core.train.worker", "core.generate": "core.evaluate.generate"}
ACTIONS = {"train": "train", "generate": "evaluate"}


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('action', sa.String(length=32), nullable=False, server_default='train'))
        batch_op.add_column(sa.Column('slots', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('launcher', sa.String(length=16), nullable=False, server_default='python'))
    conn = op.get_bind()
    job = sa.table('job', sa.column('id', sa.Integer), sa.column('kind', sa.String), sa.column('module', sa.String),
                   sa.column('config', sa.JSON), sa.column('action', sa.String), sa.column('slots', sa.Integer),
                   sa.column('launcher', sa.String))
    for row in conn.execute(sa.select(job.c.id, job.c.kind, job.c.module, job.c.config)).all():
        config = row.config if isinstance(row.config, dict) else json.loads(row.config or "{}")
        values = {"module": MODULES.get(row.module, row.module), "action": ACTIONS.get(row.kind, "train")}
        if row.kind == "train":
            values["slots"] = int(config.get("num_gpus") or 0)
            values["launcher"] = config.get("launcher") or "auto"
        conn.execute(job.update().where(job.c.id == row.id).values(**values))


def downgrade() -> None:
    conn = op.get_bind()
    job = sa.table('job', sa.column('id', sa.Integer), sa.column('module', sa.String))
    for new, old in ((v, k) for k, v in MODULES.items()):
        conn.execute(job.update().where(job.c.module == new).values(module=old))
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('launcher')
        batch_op.drop_column('slots')
        batch_op.drop_column('action')
