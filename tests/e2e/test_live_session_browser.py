"""A live panel does not outlive its session: when an engineer's session ends from outside the browser (role
lowered at the terminal, account disabled by an admin), an open Train or Runs page, left alone, shows the log-in
form within seconds instead of streaming the run on (issue 19)."""
from __future__ import annotations

import pytest
from sqlmodel import select

from tests.e2e.conftest import cli, login, shot, wait_idle
from tests.fixtures_jobs import add_job, live_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
PASSWORD = "e2e-password-123"
ENDED_WITHIN_MS = 20_000  # the fragments poll every 2-5 s: a few polls, not a click, must end the page


def _end_by_role(server, session, username: str) -> None:
    cli(server, "users", "set-role", username, "annotator")  # what an operator types; it ends the user's sessions


def _end_by_disabling(server, session, username: str) -> None:
    from core.accounts import set_active
    from storage.models import User

    admin = session.exec(select(User).where(User.role == "admin")).first()
    set_active(session, admin, username, False)  # what the Admin page's "Disable" calls


@pytest.mark.parametrize("title, how", [("Train", "role"), ("Runs", "disabled")])
def test_an_open_live_panel_shows_the_log_in_form_when_the_session_ends(server, server_db, page, title, how):
    from storage.models import Project, User

    username = f"eng-{how}"
    cli(server, "users", "add", username, "--role", "engineer", "--password", PASSWORD)
    engineer = server_db.exec(select(User).where(User.username == username)).one()
    project = server_db.exec(select(Project).order_by(Project.id)).first()
    with live_process() as proc:
        add_job(server_db, project, engineer, name=f"live-{how}", pid=proc.pid,
                metrics=[{"step": 2, "total_steps": 10, "epoch": 0.2, "loss": 1.5}])
        login(page, server.url, username, PASSWORD)
        page.get_by_role("link", name=title, exact=True).click()
        wait_idle(page)
        panel = page.get_by_text("step 2 / 10") if title == "Train" else page.locator('[data-testid="stDataFrame"]')
        panel.first.wait_for(timeout=120_000)
        shot(page, f"live-session-{how}-before")

        (_end_by_role if how == "role" else _end_by_disabling)(server, server_db, username)

        # No click, no reload: the panel's own poll finds the session ended and the whole app redraws.
        page.get_by_role("button", name="Log in").wait_for(timeout=ENDED_WITHIN_MS)
        wait_idle(page)
        shot(page, f"live-session-{how}-after")
        assert page.get_by_role("button", name="Log out").count() == 0
        assert panel.count() == 0, "the run panel is still on the page after the session ended"
        assert page.get_by_text(f"live-{how}").count() == 0
