"""Curation: imports, examples, their history and ratings, frozen dataset versions."""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, or_
from sqlmodel import Field, SQLModel, select

from storage.models.base import utcnow


# ---------------------------------------------------------------- curation


class ExampleStatus(str, Enum):
    draft = "draft"
    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"


class ImportStatus(str, Enum):
    """An import writes its rows in short batches while ``pending`` (hidden from every query through
    ``visible_examples``), then one quick update makes them all visible at once: all or nothing for users, without
    holding the database's write lock for the whole file."""

    pending = "pending"
    done = "done"


class ImportRecord(SQLModel, table=True):
    """One import: who, when, which file, and what happened to each record."""

    id: Optional[int] = Field(default=None, primary_key=True)
    status: str = Field(default=ImportStatus.done.value, max_length=16, sa_column_kwargs={"server_default": "done"})
    project_id: int = Field(foreign_key="project.id", index=True)
    user_id: Optional[int] = Field(default=None, foreign_key="user.id")
    filename: str = ""
    format: str = ""
    strict: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    n_read: int = 0
    n_imported: int = 0
    n_rejected: int = 0
    n_duplicates: int = 0
    n_near_duplicates: int = 0
    ended_early: bool = False
    report: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Example(SQLModel, table=True):
    """One instruction/response example or a whole multi-turn conversation.

    ``turns`` is the list of ``{"role": "user"|"assistant", "content": str}`` after the system prompt.
    A single-turn pair is ``[user, assistant]``: instruction = user content, response = assistant content.
    ``input`` is Alpaca's optional input, kept apart so Alpaca round-trips without loss.
    """

    __table_args__ = (
        Index("ix_example_project_status_id", "project_id", "status", "id"),
        Index("ix_example_project_hash", "project_id", "content_hash"),
        Index("ix_example_project_assignee", "project_id", "assigned_to", "status"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    system: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    turns: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    input: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    tags: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    status: str = Field(default=ExampleStatus.draft.value, max_length=16)
    reject_reason: str = ""
    content_hash: str = Field(default="", max_length=64)
    search_text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    near_duplicate_of: Optional[int] = Field(default=None)
    token_count: int = 0
    source: str = Field(default="manual", max_length=32)
    # Where a generated draft came from, so it can be traced: for source "review_feedback" the eval set, prompt,
    # reviewer, the reviewer's whole comment, the starting answer and any test-split example it repeats.
    origin: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"))
    import_id: Optional[int] = Field(default=None, foreign_key="importrecord.id")
    assigned_to: Optional[int] = Field(default=None, foreign_key="user.id")
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    updated_by: Optional[int] = Field(default=None, foreign_key="user.id")
    reviewed_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Optimistic locking: a save carries the version it started from; a stale save is refused.
    version: int = 1


class ExampleRevision(SQLModel, table=True):
    """One step in an example's life (created, edited, submitted, approved, rejected, edited by a reviewer):
    who, when, the status after it and the text as it was then, so a reviewer sees what changed since the last
    review. Imports write no revision (the import record says who and when); version 1 is the imported text."""

    __table_args__ = (Index("ix_examplerevision_example_id_id", "example_id", "id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    example_id: int = Field(foreign_key="example.id")
    version: int
    action: str = Field(max_length=32)
    status: str = Field(max_length=16)
    user_id: Optional[int] = Field(default=None, foreign_key="user.id")
    at: datetime = Field(default_factory=utcnow)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # {"system", "turns", "input", "tags", "note"} after this step
    record: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def visible_examples():
    """The WHERE clause every read of examples uses: not the rows of an import still in progress."""
    pending = select(ImportRecord.id).where(ImportRecord.status == ImportStatus.pending.value)
    return or_(Example.import_id.is_(None), Example.import_id.not_in(pending))


class ExampleRating(SQLModel, table=True):
    """Multi-annotator mode: one quality label per annotator per example (used for agreement)."""

    __table_args__ = (UniqueConstraint("example_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    example_id: int = Field(foreign_key="example.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    rating: int
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersion(SQLModel, table=True):
    """An immutable snapshot of the approved examples; training runs point here."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=200)
    content_hash: str = Field(max_length=64)
    seed: int = 0
    split_fractions: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    n_train: int = 0
    n_validation: int = 0
    n_test: int = 0
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersionItem(SQLModel, table=True):
    """A frozen copy of one example inside a version (never changes after freezing)."""

    __table_args__ = (Index("ix_dvi_version_split", "version_id", "split"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="datasetversion.id")
    example_id: int = Field(index=True)
    split: str = Field(max_length=16)
    system: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    turns: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    input: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    tags: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
