"""Live panels re-check who is signed in on every run (issue 19): ``ui.frame.live_fragment`` draws nothing for an
ended session or a disabled account, and no page or core module polls with a bare ``st.fragment``, which would
keep the user of the first render. The timed reruns themselves are driven in a real browser:
tests/e2e/test_live_session_browser.py."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import sessions
from core.accounts import set_active, set_role

ROOT = Path(__file__).resolve().parents[1]


def _panel_script():
    import streamlit as st

    from ui.frame import live_fragment

    @live_fragment("60s", "train")
    def panel() -> None:
        st.text("live panel: step 2 / 10")

    panel()


def _signed_in(session, user) -> AppTest:
    row, _ = sessions.start(session, user, "local")
    at = AppTest.from_function(_panel_script, default_timeout=30)
    at.session_state["user_id"] = user.id
    at.session_state["login_session_id"] = row.id
    return at


def _texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def test_a_live_panel_draws_for_a_signed_in_engineer(session, users):
    at = _signed_in(session, users["engineer"]).run()
    assert not at.exception, at.exception
    assert _texts(at) == ["live panel: step 2 / 10"]


@pytest.mark.parametrize("how", ["role lowered", "disabled", "logged out elsewhere"])
def test_a_live_panel_ends_with_its_session(session, users, how):
    engineer, admin = users["engineer"], users["admin"]
    at = _signed_in(session, engineer).run()
    assert _texts(at) == ["live panel: step 2 / 10"]
    if how == "role lowered":
        set_role(session, admin, engineer.username, "annotator")
    elif how == "disabled":
        set_active(session, admin, engineer.username, False)
    else:
        sessions.end(session, at.session_state["login_session_id"], "logged out")
    at.run()
    assert not at.exception, at.exception
    assert _texts(at) == []
    assert "user_id" not in at.session_state  # the login is forgotten: the app's next run shows the log-in form


def test_nobody_signed_in_sees_no_panel():
    at = AppTest.from_function(_panel_script, default_timeout=30).run()
    assert not at.exception and _texts(at) == []


def _bare_fragments(path: Path) -> list[int]:
    """Lines of ``path`` that use ``st.fragment`` (as a decorator or a call), comments aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "fragment"
            and isinstance(node.value, ast.Name) and node.value.id == "st"]


def test_every_polling_fragment_goes_through_live_fragment():
    files = [ROOT / "app.py", *(f for src in ("pages", "ui", "core") for f in (ROOT / src).rglob("*.py"))]
    offenders = {str(f.relative_to(ROOT)): lines for f in files if f != ROOT / "ui" / "frame.py"
                 if (lines := _bare_fragments(f))}
    assert offenders == {}, "poll with ui.frame.live_fragment, which re-checks the session on every run"
