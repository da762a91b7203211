"""Engine, connection pragmas, sessions and migrations.

SQLite by default (one file in the workspace); any SQLAlchemy URL through ``DATABASE_URL``.
Every SQLite connection gets WAL, synchronous=NORMAL, a busy timeout and foreign keys.
Schema changes are Alembic migrations under storage/migrations (batch mode on SQLite);
``init_db`` upgrades an older database to the newest revision.

storage imports nothing from core: the caller says where the database is and which error to raise when it
cannot be used (``configure``; core.workspace does it for the whole app, on import).
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, create_engine

BUSY_TIMEOUT_MS = 10_000
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseUnavailable(Exception):
    """The database cannot be used (not SQLite, read-only, unreachable); raised unless ``configure`` names
    another class."""


class DatabaseBusy(Exception):
    """Another writer held the database past the busy timeout; nothing was written. (``configure`` names the
    class the app raises instead.)"""


class DatabaseWriteFailed(Exception):
    """The disk refused the write (full, I/O error, read-only); nothing was written. (See ``configure``.)"""


def _url_from_env() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise DatabaseUnavailable("No database configured: set DATABASE_URL or call storage.db.configure().")
    return url


_resolve_url: Callable[[], str] = _url_from_env
_error_class: type[Exception] = DatabaseUnavailable
_busy_class: type[Exception] = DatabaseBusy
_write_failed_class: type[Exception] = DatabaseWriteFailed


def configure(url: Callable[[], str] | None = None, error: type[Exception] | None = None,
              busy: type[Exception] | None = None, write_failed: type[Exception] | None = None) -> None:
    """Where the database is (a function, read on every use, so switching workspaces works) and the exception
    classes raised when it cannot be used, when it stays locked by another writer, and when the disk refuses a
    write (each is built from one message string)."""
    global _resolve_url, _error_class, _busy_class, _write_failed_class
    if url is not None:
        _resolve_url = url
    if error is not None:
        _error_class = error
    if busy is not None:
        _busy_class = busy
    if write_failed is not None:
        _write_failed_class = write_failed


def database_url() -> str:
    """The configured database URL."""
    return _resolve_url()


def _set_sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# SQLite's own words for a write the disk refused, and what to tell a person instead.
_DISK_ERRORS = {
    "database or disk is full": "the disk holding the workspace is full; free some space",
    "disk i/o error": "the disk holding the workspace reported an I/O error",
    "attempt to write a readonly database": "the database file is read-only",
    "unable to open database file": "the database file cannot be opened (moved, deleted or no permission)",
}


def _translate_sqlite_error(context) -> None:
    """SQLAlchemy's handle_error hook: a lock held past the busy timeout, or a write the disk refused, becomes
    the configured exception with a message a person can act on (pages and the CLI show it as it is)."""
    orig = context.original_exception
    if not isinstance(orig, sqlite3.OperationalError):
        return
    text = str(orig).lower()
    if "database is locked" in text or "database table is locked" in text:
        raise _busy_class(f"The database is busy: another write held it for more than {BUSY_TIMEOUT_MS // 1000} s. "
                          "Nothing was saved; try again in a moment.") from None
    for words, meaning in _DISK_ERRORS.items():
        if words in text:
            raise _write_failed_class(f"The database could not be written: {meaning}. Nothing was saved.") from None


def is_busy(err: BaseException) -> bool:
    """Whether ``err`` says the database was locked by another writer (translated or not)."""
    if isinstance(err, _busy_class):
        return True
    orig = getattr(err, "orig", err)
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig).lower()


def retry_busy(fn: Callable[[], object], *, give_up_after_s: float = 600.0, first_wait_s: float = 0.1,
               max_wait_s: float = 2.0):
    """``fn()`` (one whole transaction), tried again with growing waits while the database is locked by another
    writer, for up to ``give_up_after_s``; then the last busy error is raised. Job processes report through
    this: a long write elsewhere must delay their heartbeat, never kill the job."""
    deadline = time.monotonic() + give_up_after_s
    wait = first_wait_s
    while True:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - only busy errors are retried, see is_busy
            if not is_busy(err) or time.monotonic() + wait > deadline:
                raise
        time.sleep(wait)
        wait = min(max_wait_s, wait * 2)


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` with the project's connection settings."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _set_sqlite_pragmas)
        event.listen(engine, "handle_error", _translate_sqlite_error)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


_ENGINES: dict[str, Engine] = {}


def get_engine() -> Engine:
    """The (cached, per URL) engine of the current workspace database."""
    url = database_url()
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def reset_engines() -> None:
    """Dispose cached engines (tests switch workspaces)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise


@contextmanager
def single_transaction() -> Iterator[Session]:
    """A session in which every ``commit()`` only closes a savepoint: all the work commits once at the end, or
    not at all if anything raises. For a set-up made of steps that each commit on their own (the demo seed:
    create project, import, approve, freeze), so a crash half-way leaves nothing behind.

    SQLAlchemy's "join a session into an external transaction" recipe. On SQLite it needs its own engine on which
    the driver leaves transactions to SQLAlchemy (pysqlite's own BEGIN handling makes SAVEPOINT unreliable; see
    SQLAlchemy's "Serializable isolation / Savepoints / Transactional DDL" notes for pysqlite)."""
    url = database_url()
    engine = make_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", lambda dbapi_conn, _record: setattr(dbapi_conn, "isolation_level", None))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    try:
        with engine.connect() as conn:
            outer = conn.begin()
            with Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False) as session:
                try:
                    yield session
                except BaseException:
                    outer.rollback()
                    raise
            outer.commit()
    finally:
        engine.dispose()


def _alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(rev)s")
    return cfg


def _check_sqlite_file(url: str) -> None:
    """Refuse a file that is not an SQLite database, or a workspace we cannot write, with a clear message."""
    path = url.removeprefix("sqlite:///")
    if path in ("", ":memory:") or url.startswith("sqlite://") and not url.startswith("sqlite:///"):
        return
    db = Path(path)
    folder = db.parent
    if db.exists():
        with open(db, "rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise _error_class(f"{db} is not an SQLite database; move it away or choose another workspace.")
        if not os.access(db, os.W_OK) or not os.access(folder, os.W_OK):
            raise _error_class(f"The workspace {folder} is read-only; choose a writable folder with --workspace.")
    else:
        if not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise _error_class(f"Cannot create the workspace {folder}: {err.strerror}.") from None
        if not os.access(folder, os.W_OK):
            raise _error_class(f"The workspace {folder} is read-only; choose a writable folder with --workspace.")


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``url`` (default: the workspace database)."""
    from alembic import command

    url = url or database_url()
    if url.startswith("sqlite"):
        _check_sqlite_file(url)
    cfg = _alembic_config(url)
    try:
        command.upgrade(cfg, revision)
    except (DatabaseError, sqlite3.DatabaseError) as err:
        raise _error_class(f"Cannot open the database: {_short(err)}") from None


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url or database_url())
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def init_db() -> Engine:
    """Make sure the workspace database exists and is at the newest schema; return its engine."""
    url = database_url()
    upgrade(url)
    engine = get_engine()
    try:
        with engine.connect() as conn:
            inspect(conn).get_table_names()
    except OperationalError as err:
        raise _error_class(f"Cannot open the database: {_short(err)}") from None
    return engine


def _short(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err)
    return text.splitlines()[0][:200]
