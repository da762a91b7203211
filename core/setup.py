"""First start of a workspace: folders, database at the newest schema, the first admin, the demo project."""
from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from core.accounts import bootstrap_admin, first_admin
from core.curate.demo import seed_demo
from core.curate.importing import discard_abandoned_imports
from core.errors import WorkspaceError
from core.projects import list_projects
from core.workspace import exports_dir, imports_dir, models_dir, offline_env, runs_dir, uploads_dir, workspace_dir
from storage.db import get_engine, init_db


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
            raise WorkspaceError(f"The workspace {ws} is read-only; choose a writable folder with --workspace.") from None
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
