"""Knowledge documents and their searchable chunks."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.models.base import utcnow


# ---------------------------------------------------------------- knowledge documents


class Document(SQLModel, table=True):
    """One version of a knowledge document of a project (an FAQ, a policy, the fact sheet), as plain text with its
    chunks (DocumentChunk). Uploading a document under a name that exists makes the next version; only the
    ``current`` version of a name is searched. Deleting keeps the rows (``deleted_at``): drafts made from a
    document keep their origin."""

    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    version: int = 1
    kind: str = Field(max_length=16)  # markdown | text | html | pdf
    content_hash: str = Field(max_length=64)  # sha256 of the uploaded bytes
    size_bytes: int = 0
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    n_chunks: int = 0
    current: bool = True
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: Optional[datetime] = None
    deleted_by: Optional[int] = Field(default=None, foreign_key="user.id")


class DocumentChunk(SQLModel, table=True):
    """A passage of a document version: ``ordinal`` is its § number (1-based) and ``heading`` the section it sits
    in. Indexed for full-text search (SQLite FTS5 table ``documentchunk_fts``; PostgreSQL a GIN index)."""

    __table_args__ = (Index("ix_documentchunk_document", "document_id", "ordinal"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id")
    ordinal: int
    heading: str = Field(default="", max_length=500)
    text: str = Field(sa_column=Column(Text, nullable=False))
