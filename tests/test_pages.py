"""Every page renders under AppTest for every role, with no exception, and shows only what that role may use."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.accounts import can
from tests.helpers import PASSWORD
from ui.frame import PAGES, visible_pages

ROLES = ["admin", "engineer", "reviewer", "annotator"]
DENIED = "Your role cannot use this page."
ROOT = Path(__file__).resolve().parents[1]


def _texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "title", "header", "subheader", "caption", "error", "warning", "info", "success", "text"):
        parts += [str(getattr(el, "value", "")) for el in getattr(at, kind)]
    return "\n".join(parts)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("spec", PAGES, ids=[p.title for p in PAGES])
def test_page_renders_for_each_role(demo, users, role, spec):
    at = AppTest.from_file(str(ROOT / spec.path), default_timeout=60)
    at.session_state["user_id"] = users[role].id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    allowed = spec.action is None or can(users[role], spec.action)
    if allowed:
        assert DENIED not in _texts(at)
    else:
        assert [e.value for e in at.error] == [DENIED]
        assert not at.button and not at.text_input and not at.text_area


@pytest.mark.slow
def test_pages_require_a_login(demo):
    for spec in PAGES:
        at = AppTest.from_file(str(ROOT / spec.path), default_timeout=60)
        at.run()
        assert not at.exception
        assert "Please log in." in [w.value for w in at.warning]


@pytest.mark.parametrize("role,expected", [
    ("annotator", {"Home", "Import", "Annotate", "Datasets", "Documents", "Pilot", "Account"}),
    ("reviewer", {"Home", "Import", "Annotate", "Review data", "Datasets", "Documents", "Compare", "Pilot",
                  "Account"}),
    ("engineer", {"Home", "Import", "Annotate", "Review data", "Datasets", "Documents", "Train", "Runs", "Generate",
                  "Compare", "Results", "Playground", "Pilot", "Account"}),
    ("admin", {p.title for p in PAGES}),
])
def test_navigation_lists_only_what_the_role_may_use(users, role, expected):
    assert {p.title for p in visible_pages(users[role])} == expected


def test_app_shows_login_then_home(demo, users):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    username, password = at.text_input[0], at.text_input[1]
    username.input("engineer1")
    password.input("wrong-password")
    at.button[0].click().run()
    assert "Wrong username or password." in [e.value for e in at.error]
    assert "user_id" not in at.session_state
    at.text_input[0].input("engineer1")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user_id"] == users["engineer"].id
    # AppTest keeps the page it was on; the browser test checks the redirect itself.
    at.switch_page(str(ROOT / "pages" / "home.py")).run()
    assert not at.exception
    assert any("Utility support assistant" in h.value for h in at.header)


def test_a_database_that_is_not_sqlite_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    from storage.db import reset_engines

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "studio.db").write_text("my shopping list")
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(ws))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_engines()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{ws / 'studio.db'} is not an SQLite database; move it away or "
                                           "choose another workspace."]
    assert not at.text_input  # no log-in form on a broken workspace
    assert (ws / "studio.db").read_text() == "my shopping list"
    reset_engines()
