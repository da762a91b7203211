"""pilots: agents try a system on customers' questions

Revision ID: 0012_pilots
Revises: 0011_judges
Create Date: 2026-12-02

A pilot is a system (base, run or export) that support agents try on customers' questions for a time window,
blind or not; each exchange keeps the question, the answer, the agent's rubric ratings, whether they would
escalate to a human, their corrected answer and the draft example it was sent to annotation as.
"""
import sqlalchemy as sa
from alembic import op


revision = '0012_pilots'
down_revision = '0011_judges'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pilot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('system', sa.String(length=64), nullable=False),
    sa.Column('starts_at', sa.DateTime(), nullable=False),
    sa.Column('ends_at', sa.DateTime(), nullable=False),
    sa.Column('blind', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['user.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name')
    )
    with op.batch_alter_table('pilot', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pilot_project_id'), ['project_id'], unique=False)

    op.create_table('pilotexchange',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pilot_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('client', sa.String(length=200), nullable=False),
    sa.Column('conversation_id', sa.String(length=64), nullable=False),
    sa.Column('turn_index', sa.Integer(), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('completion_id', sa.String(length=100), nullable=True),
    sa.Column('ratings', sa.JSON(), nullable=False),
    sa.Column('escalate', sa.Boolean(), nullable=True),
    sa.Column('correction', sa.Text(), nullable=False),
    sa.Column('rated_at', sa.DateTime(), nullable=True),
    sa.Column('sent_example_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['pilot_id'], ['pilot.id'], ),
    sa.ForeignKeyConstraint(['sent_example_id'], ['example.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('completion_id')
    )
    with op.batch_alter_table('pilotexchange', schema=None) as batch_op:
        batch_op.create_index('ix_pilotexchange_pilot_created', ['pilot_id', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pilotexchange', schema=None) as batch_op:
        batch_op.drop_index('ix_pilotexchange_pilot_created')

    op.drop_table('pilotexchange')
    with op.batch_alter_table('pilot', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pilot_project_id'))

    op.drop_table('pilot')
