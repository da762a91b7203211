"""Staying signed in, in a real browser: a refresh, a second tab and a deep link keep the user and the page; a
log-out, a password reset and repeated wrong passwords end or slow down what they must."""
import re

import pytest

from tests.e2e.conftest import cli, login, logout, shot, wait_idle

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-123"


@pytest.fixture(scope="module")
def people(server):
    for name, role in (("sam", "annotator"), ("rita", "reviewer"), ("tess", "annotator")):
        cli(server, "users", "add", name, "--role", role, "--password", PASSWORD)
    return server


def title(page) -> str:
    return page.locator('[data-testid="stMain"] h1').first.inner_text()


def wait_for_cookie(page) -> dict:
    for _ in range(60):
        found = [c for c in page.context.cookies() if c["name"] == "fts_session"]
        if found:
            return found[0]
        page.wait_for_timeout(250)
    raise AssertionError("the browser never received the session cookie")


def test_refresh_second_tab_and_log_out(people, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    login(page, people.url, "sam", PASSWORD)
    cookie = wait_for_cookie(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "fts_session" not in page.evaluate("document.cookie")  # page scripts cannot read it

    page.get_by_role("link", name="Annotate", exact=True).click()
    wait_idle(page)
    page.reload()
    wait_idle(page)
    assert page.url.split("?")[0].endswith("/annotate") and title(page) == "Annotate"
    assert page.get_by_role("button", name="Log out").count() == 1
    shot(page, "s1-after-refresh")

    second = ctx.new_page()
    second.goto(people.url + "/import")
    wait_idle(second)
    assert title(second) == "Import"
    assert second.get_by_role("button", name="Log out").count() == 1

    logout(page)
    for _ in range(40):
        if not any(c["name"] == "fts_session" for c in ctx.cookies()):
            break
        page.wait_for_timeout(250)
    assert not any(c["name"] == "fts_session" for c in ctx.cookies())
    page.reload()
    page.get_by_role("button", name="Log in").wait_for()
    # The other tab shared the session: its next click finds it ended.
    second.get_by_role("link", name="Home", exact=True).click()
    second.get_by_role("button", name="Log in").wait_for()
    assert second.get_by_role("button", name="Log out").count() == 0
    ctx.close()


def test_deep_link_opens_that_page_after_log_in(people, page):
    page.goto(people.url + "/annotate")
    page.get_by_role("button", name="Log in").wait_for()
    assert "Page not found" not in page.inner_text("body")
    shot(page, "s2-deep-link-login")
    page.get_by_label("Username", exact=True).fill("sam")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    wait_idle(page)
    assert page.url.split("?")[0].endswith("/annotate") and title(page) == "Annotate"
    # A page the role may not use keeps its address and says so, instead of "Page not found".
    page.goto(people.url + "/admin")
    page.get_by_text("Your role cannot use this page.").wait_for()
    assert page.get_by_role("link", name="Admin", exact=True).count() == 0


def test_password_reset_signs_the_user_out_everywhere(people, page):
    login(page, people.url, "rita", PASSWORD)
    wait_for_cookie(page)
    page.get_by_role("link", name="Review data", exact=True).click()
    wait_idle(page)
    cli(people, "users", "set-password", "rita", "--password", "a-brand-new-one")
    page.get_by_role("link", name="Home", exact=True).click()
    page.get_by_role("button", name="Log in").wait_for()
    page.get_by_text("Your session ended; please log in again.").wait_for()
    page.reload()
    page.get_by_role("button", name="Log in").wait_for()
    assert page.get_by_role("button", name="Log out").count() == 0


def test_repeated_wrong_passwords_make_the_next_attempt_wait(people, page):
    page.goto(people.url)
    message = re.compile(r"Too many failed log-ins\. Try again in (\d+) seconds?\.")

    def attempt(password: str) -> str:
        page.get_by_label("Username", exact=True).fill("tess")
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Log in").click()
        page.locator("[data-testid=stAlert]").first.wait_for()
        wait_idle(page)
        return page.locator("[data-testid=stAlert]").first.inner_text()

    # Waits double (1, 2, 4, ... s): on a slow machine an attempt can outlast the early waits, so allow enough
    # attempts for the wait to outgrow one attempt's duration.
    for _ in range(20):
        said = attempt("not-her-password")
        found = message.search(said)
        if found and int(found.group(1)) >= 3:
            break
        assert found or "Wrong username or password." in said, said
        if found:  # a short wait: let it pass, and fail again so the next wait doubles
            page.wait_for_timeout(int(found.group(1)) * 1000 + 300)
    else:
        raise AssertionError("wrong passwords never slowed down")
    shot(page, "s3-throttled")
    assert message.search(attempt(PASSWORD)), "the right password must wait too"
    assert page.get_by_role("button", name="Log out").count() == 0
