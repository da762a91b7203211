"""What every page shares: the logged-in user, the current project, a database session, error display.

Pages call core functions through ``run_action`` so a StudioError becomes a clear message, never a
traceback. session_state only holds ids; the database is the truth.

Who is signed in: ``user_id`` plus ``login_session_id``, the core.sessions row that a log-in or the session
cookie (after a refresh, in a second tab, on a deep link) stands for. Each run re-checks that row, so a
log-out elsewhere, a password reset, a disabled account or a lowered role ends it at the next click, and
live panels (``live_fragment``) re-check it on each of their timed reruns, so an open page ends it with no click.
(Page tests that set only ``user_id`` act as that user without a session row: session_state lives on the
server and a browser cannot write it.)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import functools
import re
import secrets

import streamlit as st
from sqlmodel import Session

from core import sessions
from core.accounts import can
from core.errors import StudioError
from storage.models import Project, User
from ui import browser


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
    PageSpec("pages/dataset_versions.py", "Datasets", ":material/dataset:", "curate", "Curate"),
    PageSpec("pages/documents.py", "Documents", ":material/description:", "curate", "Curate"),
    PageSpec("pages/train.py", "Train", ":material/model_training:", "train", "Train"),
    PageSpec("pages/runs.py", "Runs", ":material/monitoring:", "train", "Train"),
    PageSpec("pages/generate.py", "Generate", ":material/auto_awesome:", "evaluate", "Evaluate"),
    PageSpec("pages/compare.py", "Compare", ":material/compare:", "score", "Evaluate"),
    PageSpec("pages/results.py", "Results", ":material/leaderboard:", "evaluate", "Evaluate"),
    PageSpec("pages/playground.py", "Playground", ":material/forum:", "evaluate", "Ship"),
    PageSpec("pages/pilot.py", "Pilot", ":material/support_agent:", "pilot", "Ship"),
    PageSpec("pages/admin.py", "Admin", ":material/admin_panel_settings:", "manage_users", "Workspace"),
    PageSpec("pages/account.py", "Account", ":material/person:", None, "Workspace"),
]


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md_literal(text: str) -> str:
    """``text`` escaped so that Streamlit's Markdown (captions, messages, radio and widget labels) shows it as
    typed: no image is fetched, no link, emphasis or HTML is made from user-controlled text."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text)).replace("\n", " ")


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
        return _resume_from_cookie()
    sid = st.session_state.get("login_session_id")
    with db() as s:
        user = sessions.check(s, sid) if sid is not None else s.get(User, uid)
    if user is None or user.id != uid or not user.active:
        _forget_login()
        if sid is not None:
            flash("Your session ended; please log in again.")
        return None
    return user


def _resume_from_cookie() -> User | None:
    """A new browser tab, a refresh or a deep link: the session cookie, if it names a live session."""
    token = st.context.cookies.get(sessions.COOKIE_NAME)
    if not isinstance(token, str) or not token or st.session_state.get("_cookie_seen") == token:
        return None
    st.session_state["_cookie_seen"] = token  # a dead token is looked up once per browser tab, not every run
    with db() as s:
        found = sessions.resume(s, token)
    if found is None:
        return None
    user, row = found
    st.session_state.update(user_id=user.id, login_session_id=row.id)
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


F = TypeVar("F", bound=Callable)


def live_fragment(run_every: str, action: str | None) -> Callable[[F], F]:
    """``st.fragment(run_every=...)`` for a live panel that may be used only by a signed-in user whose role may
    do ``action`` (None: any signed-in user).

    A timed fragment rerun skips the page's ``require_page``, so a panel that trusted the user of the first render
    would go on streaming after a log-out elsewhere, a password reset, a disabled account or a lowered role. Each
    run re-checks the session first (``current_user``, which forgets an ended login) and, when it no longer
    holds, reruns the whole app instead of drawing: the log-in form, or the page's own refusal for a role that
    may no longer use it (the page must ``require_page`` at least ``action``, or that rerun would come back here)."""

    def decorate(draw: F) -> F:
        @functools.wraps(draw)
        def checked(*args, **kwargs):
            was_signed_in = st.session_state.get("user_id") is not None
            user = current_user()
            if user is None or (action is not None and not can(user, action)):
                if was_signed_in:
                    st.rerun(scope="app")
                st.stop()  # nobody was signed in: nothing to redraw, and no rerun loop
            return draw(*args, **kwargs)

        return st.fragment(checked, run_every=run_every)

    return decorate


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


def client_address() -> str:
    """Where this browser connects from (for log-in back-off); "local" for this machine."""
    address = st.context.ip_address
    return address if isinstance(address, str) and address else "local"


def login(user: User) -> None:
    """Sign ``user`` in here and have the browser fetch the session cookie that keeps it signed in."""
    with db() as s:
        row, ticket = sessions.start(s, user, client_address())
    st.session_state.update(user_id=user.id, login_session_id=row.id)
    browser.request_session_cookie(ticket)


def _forget_login() -> None:
    for key in list(st.session_state.keys()):
        if key != "_cookie_seen":
            del st.session_state[key]


def logout() -> None:
    """End this session on the server (every tab of this browser shares it) and delete the cookie."""
    sid = st.session_state.get("login_session_id")
    if sid is not None:
        with db() as s:
            sessions.end(s, sid, "logged out")
    _forget_login()
    browser.request_cookie_removal(secrets.token_hex(6))
