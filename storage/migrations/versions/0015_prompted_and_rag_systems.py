"""prompted and +RAG systems: the team's prompt and retrieval depth per project, an answer's cost and context

Revision ID: 0015_prompted_and_rag_systems
Revises: 0014_documents
Create Date: 2026-12-02

Two variants of every system (core/systems.py): ``+prompt`` answers with the project's team prompt as its system
prompt, ``+rag`` with the top ``rag_top_k`` document chunks retrieved for the question. Each output keeps what it
cost (prompt tokens beside the existing seconds) and, for +rag, the chunks it was given (engineers see them; blind
reviewers never do).
"""
import sqlalchemy as sa
from alembic import op

revision = '0015_prompted_and_rag_systems'
down_revision = '0014_documents'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project') as batch:
        batch.add_column(sa.Column('team_prompt', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('rag_top_k', sa.Integer(), nullable=False, server_default='3'))
    with op.batch_alter_table('output') as batch:
        batch.add_column(sa.Column('prompt_tokens', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('context', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('output') as batch:
        batch.drop_column('context')
        batch.drop_column('prompt_tokens')
    with op.batch_alter_table('project') as batch:
        batch.drop_column('rag_top_k')
        batch.drop_column('team_prompt')
