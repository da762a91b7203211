"""The server's own defences, against the real `finetune-studio serve` in Chromium: names and guidelines fetch
nothing from another host, a forged X-Forwarded-For does not dodge the log-in back-off, and every response
forbids framing with a Content-Security-Policy the app runs under without a single violation."""
from __future__ import annotations

import urllib.request
from urllib.parse import urlparse

import pytest
from sqlmodel import select

from tests.e2e.conftest import login, shot, wait_idle

pytestmark = pytest.mark.e2e

EVIL = "http://evil.example"
NAME = f"Launch ![p]({EVIL}/name.png) **bold**"
GUIDELINES = (f"Be kind.\n\n![diagram]({EVIL}/guide.png)\n\n![ref][logo]\n\n[logo]: {EVIL}/ref.png\n\n"
              f'<img src="{EVIL}/raw.png">\n\n**Keep this bold.**')


def _fetch(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def _wait_for_heading(page, text: str) -> None:
    """A heading of the main area reads exactly ``text``: shown as typed, not rendered as Markdown."""
    page.wait_for_function("""t => [...document.querySelectorAll('[data-testid=stMain] :is(h1, h2, h3)')]
                                    .some(h => h.innerText.trim() === t)""", arg=text)


def _hosts(requests: list[str]) -> list[str]:
    return [u for u in requests if urlparse(u).hostname not in ("127.0.0.1", "localhost")]


def test_a_project_name_and_guidelines_fetch_nothing_from_another_host(server, server_db, page):
    from storage.models import Project

    project = server_db.exec(select(Project).order_by(Project.id)).first()
    project.name, project.guidelines = NAME, GUIDELINES
    server_db.add(project)
    server_db.commit()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    login(page, server.url, *server.admin_credentials())
    _wait_for_heading(page, NAME)
    page.get_by_text("Guidelines and fact sheet").click()
    page.get_by_text("Keep this bold.").wait_for()  # admin guidelines stay Markdown
    page.wait_for_timeout(1000)
    shot(page, "hardening-home")
    page.goto(f"{server.url}/admin")
    wait_idle(page)
    _wait_for_heading(page, NAME)
    page.wait_for_timeout(1000)
    shot(page, "hardening-admin")
    assert not [u for u in requests if "evil.example" in u], _hosts(requests)


@pytest.mark.parametrize("path", ["/", "/_stcore/health", "/favicon.png", "/admin"])
def test_every_response_forbids_framing(server, path):
    status, headers, _ = _fetch(server.url + path)
    assert status == 200
    assert headers.get("x-frame-options") == "DENY", headers
    csp = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, csp


def test_a_static_asset_and_the_session_route_carry_the_headers(server):
    _, _, html = _fetch(server.url + "/")
    script = next(p.split('"')[0] for p in html.decode().split('src="')[1:] if p.split('"')[0].endswith(".js"))
    status, headers, _ = _fetch(server.url + "/" + script.lstrip("./"))
    assert status == 200 and headers.get("x-frame-options") == "DENY", headers
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", "")
    req = urllib.request.Request(server.url + "/_fts/session", method="POST", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as err:  # refused (no ticket), but still with the headers
        assert err.headers.get("X-Frame-Options") == "DENY"


def test_the_app_runs_under_its_policy_without_a_violation(server, page):
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    login(page, server.url, *server.admin_credentials())
    for path in ("annotate", "compare", "train", "admin"):
        page.goto(f"{server.url}/{path}")
        wait_idle(page)
    page.wait_for_timeout(1000)
    shot(page, "hardening-csp")
    violations = [c for c in console if "Content Security Policy" in c or "Refused to" in c]
    assert not violations, violations


# Last: it holds this machine back from logging in for a while.
def test_a_forged_forwarded_for_does_not_reset_the_login_back_off(server, server_db, browser):
    """24 wrong passwords from this machine, each claiming another address: they all count against this one
    client (limit: 20 free failures), because no proxy was named as trusted."""
    from core.throttle import FREE_FAILURES
    from storage.models import LoginThrottle

    attempts = FREE_FAILURES["client"] + 4
    for i in range(attempts):
        ctx = browser.new_context(extra_http_headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(server.url)
        pg.get_by_label("Username", exact=True).fill(f"nobody{i}")
        pg.get_by_label("Password", exact=True).fill("wrong-password")
        pg.get_by_role("button", name="Log in").click()
        pg.locator("[data-testid=stAlert]").first.wait_for()
        ctx.close()
    server_db.expire_all()
    rows = server_db.exec(select(LoginThrottle).where(LoginThrottle.key.startswith("client:"))).all()
    assert not [r.key for r in rows if r.key.startswith("client:203.0.113.")], [r.key for r in rows]
    locked = [r for r in rows if r.locked_until is not None]
    assert locked, f"no client was held back after {attempts} wrong passwords: {[(r.key, r.failures) for r in rows]}"
