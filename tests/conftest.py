"""Shared fixtures: a fresh workspace on real SQLite per test, users of each role, a project."""
from __future__ import annotations

import os

import pytest
from sqlmodel import Session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest_plugins = ["tests.fixtures_models"]  # tiny_model: a small random Llama with the embedded tokenizer

PASSWORD = "correct-horse-battery"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty, initialised workspace (database at head, first admin, no demo project)."""
    from core.setup import init_workspace
    from storage.db import reset_engines

    ws = tmp_path / "ws"
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_engines()
    init_workspace(with_demo=False)
    yield ws
    reset_engines()


@pytest.fixture
def session(workspace):
    from storage.db import get_engine

    with Session(get_engine(), expire_on_commit=False) as s:
        yield s


@pytest.fixture
def users(session):
    """One active user per role, all with password PASSWORD: {"admin": User, "engineer": ..., ...}."""
    from core.accounts import create_user, first_admin, set_password

    admin = first_admin(session)
    set_password(session, admin, admin.username, PASSWORD)
    out = {"admin": admin}
    for role in ("engineer", "reviewer", "annotator"):
        out[role] = create_user(session, admin, role + "1", PASSWORD, role)
    return out


@pytest.fixture
def project(session, users):
    from core.projects import create_project

    return create_project(session, users["admin"], "Test project", "for tests")
