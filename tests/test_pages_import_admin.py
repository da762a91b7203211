"""AppTest of the Import and Admin pages as a new user meets them (issue 18): an import report belongs to the
file it was made for; an admin is asked before disabling a user or resetting a password, is told it was done,
and a reset gives a one-time password shown once and signs that user out everywhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core import sessions
from core.accounts import AuthError, authenticate
from storage.models import Example, User
from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def app(path, user, project):
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at.run()


def click(at, label):
    next(b for b in at.button if b.label == label).click()
    return at.run()


def jsonl(question: str, answer: str) -> bytes:
    return (json.dumps({"instruction": question, "input": "", "output": answer}) + "\n").encode()


def shown(at) -> str:
    return "\n".join(str(el.value) for kind in ("success", "warning", "error", "info", "code", "subheader")
                     for el in getattr(at, kind))


def test_each_uploaded_file_gets_its_own_import_and_report(session, users, project):
    at = app("pages/import_data.py", users["annotator"], project)
    # Two files with the same name and size but different records (a corrected re-export, say).
    first, second = jsonl("Where is my meter?", "In the hall."), jsonl("When is my bill due?", "On day 10.")
    assert len(first) == len(second)
    at.file_uploader[0].set_value(("batch.jsonl", first, "application/json")).run()
    click(at, "Import")
    assert "Report" in shown(at) and "Imported 1 of 1 records" in shown(at)

    at.file_uploader[0].set_value(("batch.jsonl", second, "application/json")).run()
    assert "Report" not in shown(at) and "Imported 1 of 1 records" not in shown(at)  # the report was the first's
    click(at, "Import")
    assert not at.exception
    session.expire_all()
    questions = {e.turns[0]["content"] for e in session.exec(select(Example).where(Example.project_id == project.id))}
    assert {"Where is my meter?", "When is my bill due?"} <= questions
    assert shown(at).count("Imported 1 of 1 records") == 1


def open_sessions_of(session, user) -> int:
    session.expire_all()
    return len(sessions.open_sessions(session, user.id))


def admin_picks(session, users, project, target):
    """The Admin page with ``target`` picked, while ``target`` is signed in somewhere."""
    sessions.start(session, target)
    assert open_sessions_of(session, target) == 1
    at = app("pages/admin.py", users["admin"], project)
    next(s for s in at.selectbox if s.label == "User").set_value(target.username).run()
    return at


def test_disabling_a_user_asks_first_then_says_it_was_done(session, users, project):
    target = users["reviewer"]
    at = admin_picks(session, users, project, target)
    click(at, "Disable")
    assert f"Disable {target.username}?" in shown(at)
    session.expire_all()
    assert session.get(User, target.id).active  # nothing yet
    click(at, "Cancel")
    assert f"Disable {target.username}?" not in shown(at)
    click(at, "Disable")
    click(at, f"Yes, disable {target.username}")
    assert not at.exception
    assert f"Disabled {target.username}" in shown(at)
    session.expire_all()
    assert not session.get(User, target.id).active and open_sessions_of(session, target) == 0
    click(at, "Enable")
    assert f"Enabled {target.username}" in shown(at)


def test_an_admin_resets_a_password_in_the_browser(session, users, project):
    target = users["annotator"]
    at = admin_picks(session, users, project, target)
    click(at, "Reset password")
    assert f"Reset {target.username}'s password?" in shown(at)
    click(at, f"Yes, reset {target.username}'s password")
    assert not at.exception
    assert f"New password for {target.username}" in shown(at)
    password = at.code[0].value
    session.expire_all()
    assert authenticate(session, target.username, password).id == target.id
    with pytest.raises(AuthError):
        authenticate(session, target.username, PASSWORD)
    assert open_sessions_of(session, target) == 0  # signed out everywhere
    at.run()
    assert password not in shown(at)  # shown once


def test_an_admin_cannot_reset_their_own_password_from_admin(session, users, project):
    at = admin_picks(session, users, project, users["admin"])
    click(at, "Reset password")
    click(at, f"Yes, reset {users['admin'].username}'s password")
    assert "Account page" in shown(at)
    assert authenticate(session, users["admin"].username, PASSWORD)
