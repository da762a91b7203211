"""Storage: connection pragmas, migrations from an older database, bad workspaces, PostgreSQL."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import Session, select

from core.errors import WorkspaceError
from core.startup import init_workspace
from storage.db import current_revision, get_engine, make_engine, reset_engines, upgrade
from storage.models import Project, User


def test_fresh_connection_has_the_pragmas(workspace):
    with get_engine().connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def _old_database(tmp_path, revision: str, *statements: tuple[str, dict]):
    """A workspace folder whose database stopped at ``revision``, with a user and the given rows."""
    ws = tmp_path / "old"
    ws.mkdir()
    url = f"sqlite:///{ws / 'studio.db'}"
    upgrade(url, revision)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO user (username, password_hash, role, active, created_at) "
                          "VALUES ('olduser', 'x', 'admin', 1, '2026-01-01 00:00:00')"))
        for sql, params in statements:
            conn.execute(text(sql), params)
    engine.dispose()
    return ws, url


def test_database_made_by_the_first_migration_is_upgraded_on_start(tmp_path, monkeypatch):
    ws, url = _old_database(tmp_path, "0001_accounts_projects", (
        "INSERT INTO project (name, description, guidelines, created_at) "
        "VALUES ('Old project', '', 'keep me', '2026-01-01 00:00:00')", {}))
    assert current_revision(url) == "0001_accounts_projects"

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_engines()
    result = init_workspace()
    assert result.admin_password is None  # users existed: no new admin
    assert current_revision(url) != "0001_accounts_projects"
    with Session(get_engine()) as s:
        project = s.exec(select(Project)).one()
        assert project.guidelines == "keep me" and project.max_length == 1024 and project.rubric == []
        assert s.exec(select(User)).one().username == "olduser"
        assert "example" in inspect(s.connection()).get_table_names()
    reset_engines()


def test_jobs_recorded_before_the_stage_packages_still_resume(tmp_path, monkeypatch):
    """Job rows written when workers were core.train / core.generate name the moved modules after the upgrade,
    and carry the role, slots and launcher the queue now reads from the row."""
    import json as _json

    from storage.models import Job

    insert_job = ("INSERT INTO job (project_id, kind, module, name, status, run_dir, created_at, config, result, "
                  "error, cancel_requested) VALUES (1, :k, :m, 'old', 'failed', '', '2026-01-01 00:00:00', :c, '{}', "
                  "'', 0)")
    _, url = _old_database(
        tmp_path, "0002_curation_training_evaluation",
        ("INSERT INTO project (name, description, guidelines, max_length, rubric, created_at) "
         "VALUES ('Old', '', '', 1024, '[]', '2026-01-01 00:00:00')", {}),
        (insert_job, {"k": "train", "m": "core.train", "c": _json.dumps({"num_gpus": 2, "launcher": "accelerate"})}),
        (insert_job, {"k": "generate", "m": "core.generate", "c": _json.dumps({"eval_set_id": 1})}))
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as s:
        jobs = {j.kind: j for j in s.exec(select(Job))}
        assert (jobs["train"].module, jobs["train"].action, jobs["train"].slots, jobs["train"].launcher) == \
            ("core.train.train_job", "train", 2, "accelerate")
        assert (jobs["generate"].module, jobs["generate"].action, jobs["generate"].slots) == \
            ("core.evaluate.generate_job", "evaluate", 1)
    engine.dispose()
    for module in ("core.train.train_job", "core.evaluate.generate_job"):  # the names stored are importable modules
        assert __import__(module, fromlist=["main"]).main


def test_examples_from_before_origins_upgrade_with_an_empty_origin(tmp_path):
    from storage.models import Example

    _, url = _old_database(
        tmp_path, "0003_jobs_by_stage",
        ("INSERT INTO project (name, description, guidelines, max_length, rubric, created_at) "
         "VALUES ('Old', '', '', 1024, '[]', '2026-01-01 00:00:00')", {}),
        ("INSERT INTO example (project_id, system, turns, input, tags, note, status, reject_reason, content_hash, "
         "search_text, token_count, source, created_at, updated_at, version) VALUES (1, '', '[]', '', '[]', "
         "'keep me', 'draft', '', 'h', '', 0, 'manual', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)", {}))
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as s:
        example = s.exec(select(Example)).one()
        assert example.note == "keep me" and example.origin == {}
    engine.dispose()


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    db = ws / "studio.db"
    db.write_bytes(b"these are my notes, not a database\n")
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    reset_engines()
    with pytest.raises(WorkspaceError, match="not an SQLite database"):
        init_workspace()
    assert db.read_bytes() == b"these are my notes, not a database\n"


def test_read_only_workspace_is_refused(tmp_path, monkeypatch):
    """Nothing is written and the message names the problem. Root ignores permissions, so as root the check runs
    as the unprivileged user ``nobody``, in a child forked from this process after everything is imported: the
    child reads nothing of the checkout, which may sit in a private folder (a 0700 ``mktemp -d``, or /root)."""
    if os.geteuid() != 0:
        _read_only_case(tmp_path, monkeypatch)
        return
    import pwd

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="fs-read-only-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        base.chmod(0o755)  # nobody may reach the workspace (a private pytest tmp_path it could not)
        ws = base / "ro"
        ws.mkdir()
        ws.chmod(0o555)
        monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
        monkeypatch.delenv("DATABASE_URL", raising=False)
        reset_engines()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become nobody, start the workspace, report, exit without running pytest's code
            code = 4
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                try:
                    init_workspace()
                    message, code = "init_workspace() succeeded", 5
                except WorkspaceError as err:
                    message, code = str(err), 3
                os.write(write_end, message.encode())
            except BaseException as err:  # noqa: BLE001 - reported to the parent as the child's exit code
                os.write(write_end, repr(err).encode())
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as fh:
            message = fh.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3, message
        assert "read-only" in message
        assert list(ws.iterdir()) == []
    finally:
        if (base / "ro").exists():
            (base / "ro").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _read_only_case(tmp_path, monkeypatch):
    ws = tmp_path / "ro"
    ws.mkdir()
    ws.chmod(0o555)
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    reset_engines()
    try:
        with pytest.raises(WorkspaceError, match="read-only"):
            init_workspace()
        assert list(ws.iterdir()) == []
    finally:
        ws.chmod(0o755)


# ---------------------------------------------------------------- PostgreSQL


def test_postgresql_works_for_teams(postgres_url, tmp_path, monkeypatch):
    """The same migrations, first admin and core actions on PostgreSQL through DATABASE_URL."""
    from core.accounts import authenticate, create_user, first_admin, set_password

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    reset_engines()
    try:
        res = init_workspace()
        assert res.admin_password
        with Session(get_engine(), expire_on_commit=False) as s:
            admin = first_admin(s)
            set_password(s, admin, admin.username, "pg-password-1")
            create_user(s, admin, "pgreviewer", "pg-password-2", "reviewer")
            assert authenticate(s, "pgreviewer", "pg-password-2").role == "reviewer"
            assert s.get_bind().dialect.name == "postgresql"
        assert not (tmp_path / "ws" / "studio.db").exists()
    finally:
        reset_engines()  # disposes the pool: every connection is closed when it returns


def test_migrations_form_one_chain():
    """Two migrations written on parallel branches with the same parent make two heads, and `upgrade head`
    then refuses to start the app: there must be exactly one head, reached from the first revision."""
    from alembic.script import ScriptDirectory

    from storage.db import _alembic_config

    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, script.get_heads()
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain[-1] == "0001_accounts_projects" and len(chain) == len(set(chain))
