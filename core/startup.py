"""First start of a workspace (folders, database at the newest schema, the first admin, the demo project) and
the server's background upkeep (jobs reconciled and the queue moved on a timer, abandoned imports removed)."""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

from sqlmodel import Session

from core.accounts import bootstrap_admin, first_admin
from core.curate.demo import seed_demo
from core.curate.importing import discard_abandoned_imports
from core.errors import WorkspaceError
from core.jobs.queue import reconcile
from core.projects import list_projects
from core.workspace import exports_dir, imports_dir, models_dir, offline_env, runs_dir, uploads_dir, workspace_dir
from storage.db import get_engine, init_db, session_scope

# How often the server reconciles jobs on its own, whether or not anybody has a page open.
UPKEEP_S = float(os.environ.get("FINETUNE_STUDIO_UPKEEP_S", "10"))
UPKEEP_BY_SERVE = "FINETUNE_STUDIO_UPKEEP_BY_SERVE"  # set for the web app when `serve` runs the upkeep thread


@dataclass
class InitResult:
    workspace: str
    admin_username: str | None
    admin_password: str | None  # only on the very first start; printed once, never stored
    demo_project_id: int | None


def init_workspace(with_demo: bool = True) -> InitResult:
    """Idempotent: safe on every start; creates what is missing and upgrades an older database."""
    offline_env()
    ws = workspace_dir()
    for folder in (ws, runs_dir(), models_dir(), uploads_dir(), exports_dir(), imports_dir()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise WorkspaceError(f"The workspace {ws} is read-only; choose a writable folder with "
                                 "--workspace.") from None
        except OSError as err:
            raise WorkspaceError(f"Cannot create {folder}: {err.strerror}.") from None
    init_db()
    password = username = demo_id = None
    with Session(get_engine(), expire_on_commit=False) as session:
        discard_abandoned_imports(session)  # hidden rows of an import whose process died (a killed server)
        created = bootstrap_admin(session)
        if created:
            user, password = created
            username = user.username
        admin = first_admin(session)
        if with_demo and admin is not None and not list_projects(session):
            demo_id = seed_demo(session, admin).id
    return InitResult(str(ws), username, password, demo_id)


def upkeep_once() -> None:
    """One round of the server's upkeep: a job whose process died becomes failed (and the next queued job
    starts: core.jobs.queue.reconcile schedules), and imports abandoned by a dead process are removed."""
    with session_scope() as session:
        reconcile(session)
        discard_abandoned_imports(session)


_upkeep: threading.Thread | None = None
_upkeep_lock = threading.Lock()


def start_app_upkeep() -> threading.Thread | None:
    """The web app's part: start the upkeep thread unless ``finetune-studio serve`` (the process that started
    Streamlit) already runs it. Returns the thread, or None."""
    if os.environ.get(UPKEEP_BY_SERVE):
        return None
    return start_upkeep()


def start_upkeep(every_s: float | None = None) -> threading.Thread:
    """Start the upkeep thread once per process (``finetune-studio serve`` does it before the web server starts,
    so a crashed job never waits for somebody to open a page). Returns the running thread."""
    global _upkeep
    with _upkeep_lock:
        if _upkeep is None or not _upkeep.is_alive():
            interval = every_s or UPKEEP_S
            _upkeep = threading.Thread(target=_upkeep_loop, args=(interval,), name="finetune-studio-upkeep",
                                       daemon=True)
            _upkeep.start()
        return _upkeep


def _upkeep_loop(every_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(every_s):
        try:
            upkeep_once()
        except Exception as err:  # noqa: BLE001 - a busy database or a bad row must not end the upkeep
            print(f"upkeep: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
