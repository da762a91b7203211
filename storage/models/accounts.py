"""Accounts, log-in sessions and projects."""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Optional

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from storage.models.base import utcnow


# ---------------------------------------------------------------- accounts and projects


class Role(str, Enum):
    """Workspace-wide roles; each includes the rights of the ones before it."""

    agent = "agent"  # a support agent: pilots a model (the Pilot page) and nothing else
    annotator = "annotator"
    reviewer = "reviewer"
    engineer = "engineer"
    admin = "admin"


class User(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True, max_length=64)
    password_hash: str
    role: str = Field(default=Role.annotator.value, max_length=16)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: Optional[datetime] = None


class LoginSession(SQLModel, table=True):
    """One signed-in browser (see core.sessions): only SHA-256 hashes of its cookie token and of the one-time
    ticket that fetched the cookie are stored, so a copy of the database holds no usable cookie."""

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    token_hash: Optional[str] = Field(default=None, max_length=64, unique=True)  # set when the cookie is issued
    ticket_hash: Optional[str] = Field(default=None, max_length=64, unique=True)  # cleared when it is used
    ticket_expires_at: Optional[datetime] = None
    client: str = Field(default="", max_length=64)  # the address the log-in came from
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: Optional[datetime] = None
    revoke_reason: str = Field(default="", max_length=64)


class LoginThrottle(SQLModel, table=True):
    """Failed log-ins per account name or per client address, and until when that key must wait."""

    key: str = Field(primary_key=True, max_length=200)  # "account:<name>" or "client:<address>"
    failures: int = 0
    last_failure_at: datetime = Field(default_factory=utcnow)
    locked_until: Optional[datetime] = None


class Project(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    guidelines: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # [{"name": "accuracy", "description": "...", "min": 1, "max": 5}, ...]
    rubric: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    # Facts to check: [{"name": "power_cut_line", "about": "...", "keywords": ["0800 555 0105"], "match": "all"}];
    # core.evaluate.checks turns them into checks on eval prompts whose reference gives the fact.
    facts: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    max_length: int = Field(default=1024, sa_column_kwargs={"server_default": "1024"})
    annotators_per_example: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = Field(default_factory=utcnow)
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    # The Playground starts every chat with it (editable there); exports' model cards carry the two below.
    default_system_prompt: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    license: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    intended_use: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    # The "+prompt" systems answer with this as their system prompt (e.g. the fact sheet); "+rag" systems with the
    # rag_top_k document chunks retrieved for each question (core/systems.py VARIANTS).
    team_prompt: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    rag_top_k: int = Field(default=3, sa_column_kwargs={"server_default": "3"})
