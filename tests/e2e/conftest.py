"""A real server on a free port with a fresh workspace, and headless Debian Chromium driven by Playwright.

The server is started exactly as a user starts it (``finetune-studio serve``); the first-start admin
password is read from its terminal output. Screenshots go to ./artifacts/screenshots.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD_RE = re.compile(r"log in as '([^']+)' with the one-time password: (\S+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        env = dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace))
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "serve", "--port", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.lines))
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(healthy, timeout, lambda: "the server to start:\n" + "".join(self.lines), interval=0.5)

    def admin_credentials(self) -> tuple[str, str]:
        for line in self.lines:
            m = PASSWORD_RE.search(line)
            if m:
                return m.group(1), m.group(2)
        raise AssertionError("the first start printed no admin password:\n" + "".join(self.lines))

    def stop(self):
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(tmp_path_factory, name: str = "e2e"):
    """A started server on a fresh workspace, stopped on leaving."""
    srv = Server(tmp_path_factory.mktemp(name) / "ws")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install -y chromium).")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def server_db(server, monkeypatch):
    """A session on the running server's own database (the test writes what a worker or reviewer would)."""
    from sqlmodel import Session

    from storage.db import get_engine, reset_engines

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(server.workspace))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_engines()
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session
    reset_engines()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()


def cli(server: Server, *args: str) -> str:
    """Run ``finetune-studio ARGS`` against the server's workspace, as an operator at its terminal would."""
    env = dict(os.environ, FINETUNE_STUDIO_HOME=str(server.workspace))
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def window_shot(page, name: str) -> Path:
    """A screenshot of the window alone (what a person sees without scrolling), beside the full-page ones."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def out_of_view(page, parts: dict) -> dict:
    """The named locators whose box is not wholly inside the window, each with where it is (None: not drawn)."""
    size = page.viewport_size
    out = {}
    for name, locator in parts.items():
        box = locator.bounding_box()
        if (box is None or box["x"] < 0 or box["y"] < 0 or box["x"] + box["width"] > size["width"]
                or box["y"] + box["height"] > size["height"]):
            out[name] = box
    return out


def grid_text(page) -> str:
    """The cells of every table on the page (the grid's accessible table), one row a line, tab-separated."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] tr')]
        .map(r => [...r.querySelectorAll('th, td')].map(c => c.textContent).join('\\t')).join('\\n')""")


def wait_idle(page, timeout: float = 90_000) -> None:
    """Wait until Streamlit finished the current script run and the page drew its title."""
    page.wait_for_timeout(300)
    # A page with st.chat_input lays its main area out in a scroll-to-bottom container instead of stMain.
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
                 && document.querySelector('[data-testid="stMain"] h1, '
                                           + '[data-testid="stAppScrollToBottomContainer"] h1')""", timeout=timeout)
    page.wait_for_timeout(300)


def logout(page) -> None:
    """Log out and wait for the log-in form: navigating away at once can drop the click before the server ran it,
    and the still-valid session cookie then logs the next page in as the same person."""
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for(timeout=60_000)


def login(page, url: str, username: str, password: str) -> None:
    page.goto(url)
    # The first page a fresh server draws imports the app (seconds alone, over 30 s on a loaded 2-core machine).
    form, signed_in = page.get_by_label("Username", exact=True), page.get_by_role("button", name="Log out")
    form.or_(signed_in).first.wait_for(timeout=120_000)
    assert signed_in.count() == 0, f"{url} opened signed in already (log out first, with logout(page))"
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    wait_idle(page)
