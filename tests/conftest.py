"""Shared fixtures: a fresh workspace on real SQLite per test, users of each role, a project.

Migrating a database with Alembic, hashing four Argon2 passwords and seeding the demo project take from most of
a second to several seconds, and nearly every test needs a fresh database. So they are done once per session
into template files (the first admin only; a user of each role too; and the demo project as a first start
seeds it), and each test copies the one it needs: the same database a real first start makes, at the cost of
a file copy.
"""
from __future__ import annotations

import os
import shutil

import pytest
from sqlmodel import Session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# AppTest runs app.py inside this process: its upkeep timer would reconcile whichever test's workspace is current.
# Servers the tests start (`finetune-studio serve`) run their own upkeep thread regardless.
os.environ.setdefault("FINETUNE_STUDIO_UPKEEP_BY_SERVE", "1")
# The Results page's leaderboard intervals from 50 bootstrap refits instead of the product's 200: pages are tested
# for what they show, not for the intervals' precision (tests of the statistics pass their own rounds).
os.environ.setdefault("FINETUNE_STUDIO_BOOTSTRAP_ROUNDS", "50")

# tiny_model: a small random Llama with the embedded tokenizer; serve: serve-model on a model folder;
# slurm_cluster: a real Slurm (controller and two nodes) on localhost; postgres_url: a throwaway PostgreSQL
pytest_plugins = ["tests.fixtures_models", "tests.fixtures_serve", "tests.fixtures_slurm", "tests.fixtures_postgres",
                  "tests.fixtures_judges"]

from tests.helpers import PASSWORD, studio_home  # noqa: E402
ROLES = ("engineer", "reviewer", "annotator")


def _make_template(folder, with_users: bool, with_demo: bool = False):
    from core.accounts import create_user, first_admin, set_password
    from core.startup import init_workspace
    from storage.db import get_engine

    with studio_home(folder):  # its end closes every connection: the WAL is checkpointed into the file
        init_workspace(with_demo=with_demo)
        if with_users:
            with Session(get_engine(), expire_on_commit=False) as s:
                admin = first_admin(s)
                set_password(s, admin, admin.username, PASSWORD)
                for role in ROLES:
                    create_user(s, admin, role + "1", PASSWORD, role)
    return folder / "studio.db"


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory):
    """Migrated template databases: "admin" (first admin only), "users" (one user per role too), "demo" (users
    and the demo project), each made on first use."""
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = _make_template(tmp_path_factory.mktemp(f"template-{name}"), with_users=name != "admin",
                                        with_demo=name == "demo")
        return made[name]

    return get


@pytest.fixture(scope="session", autouse=True)
def web_roots(tmp_path_factory):
    """Tests keep their models (tiny_model) and export folders in pytest's temporary folders: those are the model
    and export folders an admin would set for the web (FINETUNE_STUDIO_MODEL_ROOTS, FINETUNE_STUDIO_EXPORT_ROOTS),
    here and in the servers the browser tests start. tests/test_web_paths.py checks the defaults and refusals."""
    base = str(tmp_path_factory.getbasetemp())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_STUDIO_MODEL_ROOTS", base)
        mp.setenv("FINETUNE_STUDIO_EXPORT_ROOTS", base)
        yield


@pytest.fixture
def workspace(tmp_path, monkeypatch, request, db_templates):
    """An initialised workspace (database at head, first admin, no demo project); with the ``users`` fixture
    its users are already in the database, with the ``demo`` fixture the demo project too."""
    from core.startup import init_workspace
    from storage.db import reset_engines

    ws = tmp_path / "ws"
    ws.mkdir()
    name = "demo" if "demo" in request.fixturenames else "users" if "users" in request.fixturenames else "admin"
    shutil.copyfile(db_templates(name), ws / "studio.db")
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    # Tests write the files they import into their own tmp folder: it is the import root an admin would set
    # (tests/test_import_paths.py checks the default root and the refusals).
    monkeypatch.setenv("FINETUNE_STUDIO_IMPORT_ROOTS", str(tmp_path))
    reset_engines()
    init_workspace(with_demo=False)  # the real start-up path: folders, schema check (already at head), admin
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
    from core.accounts import first_admin, get_user

    out = {"admin": first_admin(session)}
    for role in ROLES:
        out[role] = get_user(session, role + "1")
    return out


@pytest.fixture
def demo(workspace, session, users):
    """The demo project as a first start seeds it (with the users of each role beside the admin)."""
    from core.projects import list_projects

    return next(p for p in list_projects(session))


@pytest.fixture
def project(session, users):
    from core.projects import create_project

    return create_project(session, users["admin"], "Test project", "for tests")


@pytest.fixture
def reviewers(session, users):
    """Three reviewers: reviewer1 and two more."""
    from core.accounts import create_user

    extra = [create_user(session, users["admin"], f"rev{i}", PASSWORD, "reviewer") for i in (2, 3)]
    return [users["reviewer"], *extra]
