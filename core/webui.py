"""What every page shares: the logged-in user, the current project, a database session, error display.

Pages call core functions through ``run_action`` so a StudioError becomes a clear message, never a
traceback. session_state only holds ids; the database is the truth.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import streamlit as st
from sqlmodel import Session

from core.accounts import can
from core.errors import StudioError
from storage.models import Project, User


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    action: str | None  # least action the page needs (see core.accounts.ACTIONS); None = any logged-in user
    section: str

    @property
    def url_path(self) -> str:
        return self.title.lower().replace(" ", "-")


PAGES: list[PageSpec] = [
    PageSpec("pages/home.py", "Home", ":material/home:", None, "Workspace"),
    PageSpec("pages/import_data.py", "Import", ":material/upload_file:", "curate", "Curate"),
    PageSpec("pages/annotate.py", "Annotate", ":material/edit_note:", "curate", "Curate"),
    PageSpec("pages/review_data.py", "Review data", ":material/fact_check:", "review_data", "Curate"),
    PageSpec("pages/versions.py", "Datasets", ":material/dataset:", "curate", "Curate"),
    PageSpec("pages/train.py", "Train", ":material/model_training:", "train", "Train"),
    PageSpec("pages/runs.py", "Runs", ":material/monitoring:", "train", "Train"),
    PageSpec("pages/generate.py", "Generate", ":material/auto_awesome:", "evaluate", "Evaluate"),
    PageSpec("pages/compare.py", "Compare", ":material/compare:", "score", "Evaluate"),
    PageSpec("pages/results.py", "Results", ":material/leaderboard:", "evaluate", "Evaluate"),
    PageSpec("pages/playground.py", "Playground", ":material/forum:", "evaluate", "Ship"),
    PageSpec("pages/admin.py", "Admin", ":material/admin_panel_settings:", "manage_users", "Workspace"),
    PageSpec("pages/account.py", "Account", ":material/person:", None, "Workspace"),
]


def visible_pages(user: User | None) -> list[PageSpec]:
    """The pages ``user`` may use; the others are not even listed."""
    if user is None:
        return []
    return [p for p in PAGES if p.action is None or can(user, p.action)]


@contextmanager
def db() -> Iterator[Session]:
    from storage.db import get_engine

    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def current_user() -> User | None:
    uid = st.session_state.get("user_id")
    if uid is None:
        return None
    with db() as s:
        user = s.get(User, uid)
    if user is None or not user.active:
        st.session_state.pop("user_id", None)
        return None
    return user


def require_page(action: str | None) -> User:
    """Stop rendering unless a user who may use this page is logged in."""
    user = current_user()
    if user is None:
        st.warning("Please log in.")
        st.stop()
    if action is not None and not can(user, action):
        st.error("Your role cannot use this page.")
        st.stop()
    return user


def current_project() -> Project | None:
    from core.projects import list_projects

    with db() as s:
        projects = list_projects(s)
    if not projects:
        return None
    pid = st.session_state.get("project_id")
    for p in projects:
        if p.id == pid:
            return p
    st.session_state["project_id"] = projects[0].id
    return projects[0]


def require_project() -> Project:
    project = current_project()
    if project is None:
        st.info("No project yet: an admin can create one on the Admin page.")
        st.stop()
    return project


def run_action(fn: Callable, *args, success: str | None = None, **kwargs):
    """Call a core action; show its StudioError as a message. Returns the result, or None on error."""
    try:
        result = fn(*args, **kwargs)
    except StudioError as err:
        st.error(str(err))
        return None
    if success:
        flash(success)
    return result


def flash(message: str) -> None:
    """A confirmation that survives an ``st.rerun()`` (a plain st.toast right before a rerun can be lost);
    app.py shows it at the end of the run that follows."""
    st.session_state.setdefault("_flash", []).append(message)


def show_flash() -> None:
    for message in st.session_state.pop("_flash", []):
        st.toast(message)


def login(user: User) -> None:
    st.session_state["user_id"] = user.id


def logout() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]
