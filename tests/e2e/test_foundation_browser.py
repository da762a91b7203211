"""The real app in headless Chromium: first-start admin logs in, visits every page, logs out."""
import pytest

from tests.e2e.conftest import login, logout, shot, wait_idle
from ui.frame import PAGES

pytestmark = pytest.mark.e2e


def test_wrong_password_is_refused_plainly(server, page):
    page.goto(server.url)
    page.get_by_label("Username", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Wrong username or password.").wait_for()
    body = page.inner_text("body")
    assert "Traceback" not in body
    assert page.get_by_role("button", name="Log out").count() == 0
    shot(page, "00-login-refused")


def test_admin_logs_in_sees_every_page_and_logs_out(server, page):
    username, password = server.admin_credentials()
    login(page, server.url, username, password)
    page.get_by_role("heading", name="Utility support assistant").wait_for()
    shot(page, "01-home")
    for i, spec in enumerate(PAGES[1:], start=2):
        page.get_by_role("link", name=spec.title, exact=True).click()
        wait_idle(page)
        body = page.inner_text("body")
        assert "Traceback" not in body and "Error" not in page.title(), spec.title
        assert page.locator('[data-testid="stException"]').count() == 0, f"{spec.title} raised"
        shot(page, f"{i:02d}-{spec.path.split('/')[-1][:-3]}")
    logout(page)
    assert page.get_by_role("button", name="Log out").count() == 0
    shot(page, "99-logged-out")
