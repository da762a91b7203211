"""Steps a person takes in the app, shared by the browser tests that walk through several pages: open a page from
the sidebar, pick an option, fill a field, wait for text or for the app to settle."""
from __future__ import annotations

import re

from tests.e2e.conftest import wait_idle


def body(page) -> str:
    """The page's text as a reader sees it (code blocks may space with no-break spaces)."""
    return page.inner_text("body").replace("\xa0", " ")


def wait_text(page, text: str, timeout: float = 60_000) -> None:
    """Wait until the page shows ``text`` anywhere (across element boundaries, as a reader sees it)."""
    page.wait_for_function("t => document.body.innerText.replaceAll('\\u00a0', ' ').includes(t)", arg=text,
                           timeout=timeout)


def idle(page) -> None:
    """The harness's idle (the script run ended, the title is drawn), and nothing left stale."""
    wait_idle(page)
    settle(page)


def settle(page) -> None:
    """Wait until the script run a key started has drawn everything: Streamlit marks the elements of the run
    before as stale until they are redrawn, and a key pressed before that may act on an old button."""
    page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidget"]')
        && !document.querySelector('[data-stale="true"]')""")
    page.wait_for_timeout(150)


def go(page, title: str, heading: str | None = None) -> None:
    """Open a page from the sidebar and wait until it is drawn (not the page before it, still on screen)."""
    page.get_by_role("link", name=title, exact=True).click()
    page.wait_for_function("""t => { const h = document.querySelector('[data-testid="stMain"] h1');
        return h && h.innerText.trim() === t; }""", arg=heading or title)
    idle(page)


def pick(page, label: str, option: str | re.Pattern) -> None:
    """Choose ``option`` in the selectbox labelled ``label``."""
    page.get_by_label(label, exact=True).first.click()
    page.get_by_role("option", name=option).click()
    idle(page)


def set_field(page, label: str, value: str) -> None:
    """Type a value into a text or number field and leave it, so the app receives it."""
    box = page.get_by_label(label, exact=True).first
    box.fill(value)
    box.press("Tab")
    idle(page)


def replace_text(page, label: str, text: str) -> None:
    """Select all in a text area and type over it, as a person does (the text is not sent until a key acts)."""
    page.get_by_label(label, exact=True).first.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
