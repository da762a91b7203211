"""The Playground in headless Chromium on the embedded model: answers stream in, side by side gives two answers,
Stop keeps what arrived, and "Save as example" puts an edited exchange into the annotation queue."""
import json
import os
import signal
import sqlite3
import time

import pytest

from tests.e2e.conftest import login, shot, wait_idle

pytestmark = pytest.mark.e2e

ANSWERS = '[data-testid="stChatMessage"]'
STATS = "tokens/s"


def _db(server):
    return sqlite3.connect(server.workspace / "studio.db")


def _stop_serving_jobs(server) -> None:
    """The endpoint is a job in its own process session: end it so no process outlives the test."""
    with _db(server) as conn:
        rows = conn.execute("SELECT pid FROM job WHERE kind = 'serve' AND status = 'running'").fetchall()
    for (pid,) in rows:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError, TypeError):
            pass


def _send(page, text: str, placeholder: str) -> None:
    box = page.get_by_placeholder(placeholder)
    box.fill(text)
    box.press("Enter")


def _last_answer_text(page) -> str:
    answers = page.locator(ANSWERS)
    return answers.nth(answers.count() - 1).inner_text() if answers.count() else ""


def test_playground_streams_compares_stops_and_saves_an_example(server, page):
    username, password = server.admin_credentials()
    login(page, server.url, username, password)
    try:
        page.get_by_role("link", name="Playground", exact=True).click()
        wait_idle(page)
        page.get_by_text("System prompt and decoding").click()
        page.get_by_label("Max new tokens").fill("96")
        page.get_by_label("Max new tokens").press("Enter")
        wait_idle(page)

        # One system: the first message starts the endpoint (the embedded model is converted once, ~40 s).
        _send(page, "My bill doubled this month, why?", "Message the model")
        page.wait_for_function(
            f"""() => {{ const m = document.querySelectorAll('{ANSWERS}');
                       return m.length >= 2 && m[m.length - 1].innerText.trim().length > 0; }}""", timeout=600_000)
        first = _last_answer_text(page)
        assert STATS not in page.inner_text("body")  # still generating
        shot(page, "playground-01-streaming")
        page.wait_for_function(
            f"""(n) => {{ const m = document.querySelectorAll('{ANSWERS}');
                         return m[m.length - 1].innerText.trim().length > n; }}""", arg=len(first.strip()),
            timeout=60_000)
        second = _last_answer_text(page)
        shot(page, "playground-02-streaming-more")
        assert len(second.strip()) > len(first.strip()) and second.strip().startswith(first.strip()[:20])
        page.get_by_text(STATS).first.wait_for(timeout=300_000)
        wait_idle(page)
        shot(page, "playground-03-answered")
        assert "first token after" in page.inner_text("body")

        # Save the exchange as an example, after editing the answer.
        page.get_by_text("Save as example").first.click()
        page.get_by_label("Answer (edit it first)").first.fill("Sorry for the surprise. 1. Check the meter reading.")
        page.get_by_role("button", name="Save as example").first.click()
        page.get_by_text("Saved as draft example").wait_for()
        shot(page, "playground-04-saved")
        with _db(server) as conn:
            status, source, note, turns = conn.execute(
                "SELECT status, source, note, turns FROM example WHERE source = 'playground'").fetchone()
        assert (status, source) == ("draft", "playground")
        assert "From the Playground: Base model (SmolLM2-135M-Instruct), greedy" in note and "answer edited" in note
        assert json.loads(turns) == [
            {"role": "user", "content": "My bill doubled this month, why?"},
            {"role": "assistant", "content": "Sorry for the surprise. 1. Check the meter reading."}]

        # Stop keeps what had arrived.
        page.get_by_role("button", name="New chat").click()
        wait_idle(page)
        _send(page, "Tell me how to read my meter, step by step.", "Message the model")
        page.wait_for_function(
            f"""() => {{ const m = document.querySelectorAll('{ANSWERS}');
                       return m.length >= 2 && m[m.length - 1].innerText.trim().length > 0; }}""", timeout=120_000)
        page.get_by_role("button", name="Stop", exact=True).first.click()
        page.get_by_text("stopped").first.wait_for(timeout=60_000)
        wait_idle(page)
        shot(page, "playground-06-stopped")
        assert _last_answer_text(page).strip()

        # Side by side: one message, two answers (short ones: both panes here ask the same model, in turn).
        page.get_by_label("Max new tokens").fill("24")
        page.get_by_label("Max new tokens").press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="New chat").click()
        wait_idle(page)
        page.get_by_text("Side by side").click()
        wait_idle(page)
        _send(page, "Can I pay monthly?", "Message both systems")
        page.wait_for_function(
            f"""() => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                       .filter(e => e.innerText.includes('{STATS}')).length >= 2""", timeout=600_000)
        wait_idle(page)
        assert page.locator(ANSWERS).count() == 4  # each pane: the question and its answer
        shot(page, "playground-05-side-by-side")

        page.get_by_role("button", name="Stop serving").click()
        deadline = time.time() + 60
        while time.time() < deadline:
            with _db(server) as conn:
                live = conn.execute("SELECT count(*) FROM job WHERE kind = 'serve' AND status IN "
                                    "('queued', 'running')").fetchone()[0]
            if not live:
                break
            time.sleep(0.5)
        assert not live
    finally:
        shot(page, "playground-99-last")  # what the page showed when the test ended (or failed)
        _stop_serving_jobs(server)
