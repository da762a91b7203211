"""knowledge documents: versions, chunks and their full-text index

Revision ID: 0014_documents
Revises: 0013_compute_targets
Create Date: 2026-12-02

A project's documents (FAQ, policies, the fact sheet) as plain text cut into chunks. Chunks are searched with the
database's own full-text engine: an FTS5 table kept in step by triggers on SQLite, a GIN index over to_tsvector on
PostgreSQL. Ranking is the engine's (FTS5 bm25, PostgreSQL ts_rank), never hand-written.
"""
import sqlalchemy as sa
from alembic import op

revision = '0014_documents'
down_revision = '0013_compute_targets'
branch_labels = None
depends_on = None

FTS_TRIGGERS = [
    """CREATE TRIGGER documentchunk_ai AFTER INSERT ON documentchunk BEGIN
         INSERT INTO documentchunk_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END""",
    """CREATE TRIGGER documentchunk_ad AFTER DELETE ON documentchunk BEGIN
         INSERT INTO documentchunk_fts(documentchunk_fts, rowid, heading, text)
         VALUES ('delete', old.id, old.heading, old.text); END""",
    """CREATE TRIGGER documentchunk_au AFTER UPDATE ON documentchunk BEGIN
         INSERT INTO documentchunk_fts(documentchunk_fts, rowid, heading, text)
         VALUES ('delete', old.id, old.heading, old.text);
         INSERT INTO documentchunk_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END""",
]


def upgrade() -> None:
    op.create_table(
        'document',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.Integer(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('n_chunks', sa.Integer(), nullable=False),
        sa.Column('current', sa.Boolean(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('deleted_at', sa.DateTime(), nullable=True),
        sa.Column('deleted_by', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['created_by'], ['user.id']),
        sa.ForeignKeyConstraint(['deleted_by'], ['user.id']),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'name', 'version'),
    )
    with op.batch_alter_table('document', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_document_project_id'), ['project_id'], unique=False)
    op.create_table(
        'documentchunk',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('document_id', sa.Integer(), nullable=False),
        sa.Column('ordinal', sa.Integer(), nullable=False),
        sa.Column('heading', sa.String(length=500), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['document_id'], ['document.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('documentchunk', schema=None) as batch_op:
        batch_op.create_index('ix_documentchunk_document', ['document_id', 'ordinal'], unique=False)
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("CREATE VIRTUAL TABLE documentchunk_fts USING fts5(heading, text, content='documentchunk', "
                   "content_rowid='id', tokenize='porter unicode61')")
        for trigger in FTS_TRIGGERS:
            op.execute(trigger)
    elif op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE INDEX ix_documentchunk_fts ON documentchunk "
                   "USING GIN (to_tsvector('english', heading || ' ' || text))")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        for name in ('documentchunk_ai', 'documentchunk_ad', 'documentchunk_au'):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS documentchunk_fts")
    elif op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP INDEX IF EXISTS ix_documentchunk_fts")
    with op.batch_alter_table('documentchunk', schema=None) as batch_op:
        batch_op.drop_index('ix_documentchunk_document')
    op.drop_table('documentchunk')
    with op.batch_alter_table('document', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_document_project_id'))
    op.drop_table('document')
