"""Annotating and reviewing as people do it, in a real browser: the keyboard moves through the queue with a
confirmation, text typed for an example is saved on that example, hints follow the typing, a reason typed
right before Alt+X is the one used, and the buttons keep their labels in narrow windows."""
import json
import re
import sqlite3

import pytest

from tests.e2e.conftest import cli, login, logout, shot, wait_idle

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-123"
SYSTEM = "You are Brightwater Gas & Electric's support assistant."
QUESTIONS = [("How do I read my new smart meter display?", "Press button A."),
             ("Can I get paper bills instead of email?", "Yes, ask us."),
             ("Why did my direct debit go up this month?", "Usage went up.")]


@pytest.fixture(scope="module")
def drafts(server, tmp_path_factory):
    """Three imported drafts (after the approved demo examples) and an annotator and a reviewer."""
    data = server.workspace / "imports" / "questions.jsonl"  # import by path reads only the import folders
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(json.dumps({"messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in QUESTIONS) + "\n", encoding="utf-8")
    cli(server, "import", str(data))
    cli(server, "users", "add", "ann", "--role", "annotator", "--password", PASSWORD)
    cli(server, "users", "add", "rev", "--role", "reviewer", "--password", PASSWORD)
    with sqlite3.connect(server.workspace / "studio.db") as con:
        ids = [r[0] for r in con.execute("SELECT id FROM example WHERE status = 'draft' ORDER BY id")]
    assert len(ids) == 3
    return ids


def example(server, example_id: int) -> dict:
    with sqlite3.connect(server.workspace / "studio.db") as con:
        con.row_factory = sqlite3.Row
        row = con.execute("SELECT * FROM example WHERE id = ?", (example_id,)).fetchone()
    return {"version": row["version"], "status": row["status"], "tags": json.loads(row["tags"]),
            "turns": json.loads(row["turns"]), "reject_reason": row["reject_reason"]}


def heading(page, text: str) -> None:
    page.get_by_role("heading", name=text).wait_for()
    wait_idle(page)


def replace_text(page, label: str, text: str) -> None:
    box = page.get_by_label(label, exact=True).first
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


def labels_fit(page) -> list[str]:
    """Labels of the main area's buttons that are cut short (text wider than its box)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=stMain] button')]
        .filter(b => b.offsetParent !== null)
        .filter(b => [b, ...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))
        .map(b => b.innerText.replace(/\\n/g, ' '))""")


def test_keyboard_moves_through_the_queue_and_edits_land_where_typed(server, drafts, page):
    first, second, third = drafts
    login(page, server.url, "ann", PASSWORD)
    page.get_by_role("link", name="Annotate", exact=True).click()
    heading(page, f"Example #{first} · draft")
    # Rows are told apart by the question, not the shared system prompt.
    page.get_by_text(f"#{second} · draft · Can I get paper bills instead of email?").wait_for()

    # Edit #first and press Ctrl+Enter straight away: saved, confirmed, and #second is open.
    replace_text(page, "Response", "Press the blue button until the display shows the reading marked IMP.")
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"Saved #{first} (version 2).").wait_for()
    heading(page, f"Example #{second} · draft")
    shot(page, "a1-saved-and-next")
    assert page.get_by_label("Instruction", exact=True).first.input_value() == QUESTIONS[1][0]

    # Tags typed on #second, then Ctrl+Enter at once: they are #second's, and #third opens.
    page.get_by_label("Tags (comma separated)", exact=True).first.click()
    page.keyboard.type("billing, paper")
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"Saved #{second} (version 2).").wait_for()
    heading(page, f"Example #{third} · draft")
    one, two = example(server, first), example(server, second)
    assert one["version"] == 2 and one["tags"] == []
    assert one["turns"][1]["content"].startswith("Press the blue button")
    assert two["version"] == 2 and two["tags"] == ["billing", "paper"]

    # Alt+Left and Alt+Right step back and forth without saving.
    page.keyboard.press("Alt+ArrowLeft")
    heading(page, f"Example #{second} · draft")
    assert page.get_by_label("Tags (comma separated)", exact=True).first.input_value() == "billing, paper"
    page.keyboard.press("Alt+ArrowRight")
    heading(page, f"Example #{third} · draft")

    # Hints follow the typing, before the field is left.
    # (While Streamlit redraws after a keystroke the old hint box can stay on screen beside the new one for a
    # moment, so the checks look at the newest box.)
    hints = page.get_by_test_id("ftsHints").last
    replace_text(page, "Response", "Ok")
    hints.get_by_text("A response is very short (under 3 words).").wait_for()
    assert "estimated while you type" in hints.inner_text()
    page.keyboard.type(" then check the meter reading against your last bill")
    page.get_by_test_id("ftsHints").get_by_text("A response is very short").first.wait_for(state="detached")
    shot(page, "a2-live-hints")
    # The server's exact count comes back once the text is sent.
    page.keyboard.press("Tab")
    hints.get_by_text("tokens of max 1024 (").wait_for()
    assert example(server, third)["version"] == 1  # leaving the field saves nothing


def test_reason_typed_right_before_alt_x_is_the_reason_used(server, drafts, page):
    login(page, server.url, "ann", PASSWORD)
    page.get_by_role("link", name="Annotate", exact=True).click()
    heading(page, f"Example #{drafts[0]} · draft")
    page.keyboard.press("Control+Shift+Enter")
    page.get_by_text(f"Submitted #{drafts[0]} for review").wait_for()
    wait_idle(page)
    logout(page)

    login(page, server.url, "rev", PASSWORD)
    page.get_by_role("link", name="Review data", exact=True).click()
    heading(page, f"Example #{drafts[0]}")
    page.get_by_label("Reason", exact=False).first.click()
    page.keyboard.type("Say which button: the meter has two.")
    page.keyboard.press("Alt+x")
    page.get_by_text(f"Rejected #{drafts[0]}.").wait_for()
    wait_idle(page)
    assert example(server, drafts[0])["reject_reason"] == "Say which button: the meter has two."
    assert "Say why you reject it" not in page.inner_text("body")


@pytest.mark.parametrize("width", [1024, 800])
def test_buttons_keep_their_labels_in_narrow_windows(server, drafts, browser, width):
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    login(page, server.url, "rev", PASSWORD)
    page.goto(server.url + "/annotate")
    page.get_by_role("button", name="Save & next").wait_for()
    wait_idle(page)
    assert labels_fit(page) == []
    shot(page, f"a3-annotate-{width}px")
    page.keyboard.press("Control+Shift+Enter")  # something to review
    page.get_by_text(re.compile(r"^Submitted #\d+ for review")).wait_for()
    page.goto(server.url + "/review-data")
    page.get_by_role("button", name="Reject").wait_for()
    wait_idle(page)
    assert labels_fit(page) == []
    shot(page, f"a3-review-data-{width}px")
    ctx.close()


def open_annotate(page, server, query: str = "") -> None:
    page.goto(server.url + "/annotate" + query)
    page.get_by_role("button", name="Save & next").wait_for(timeout=90_000)  # the first visit compiles the page
    wait_idle(page)


def open_id(page) -> int:
    """The id of the example open in the editor."""
    title = page.get_by_role("heading", name=re.compile(r"^Example #\d+")).first.inner_text()
    return int(re.match(r"Example #(\d+)", title).group(1))


def test_text_typed_right_before_alt_right_or_a_filter_change_is_kept(server, drafts, page):
    login(page, server.url, "ann", PASSWORD)
    open_annotate(page, server, "?status=approved")
    first = open_id(page)
    saved = example(server, first)
    replace_text(page, "Response", "Typed, then Alt+Right at once.")
    page.keyboard.press("Alt+ArrowRight")
    page.get_by_text(f"#{first}'s unsaved edit is kept (not saved)").wait_for()
    wait_idle(page)
    assert open_id(page) != first
    page.keyboard.press("Alt+ArrowLeft")
    heading(page, f"Example #{first} · approved · unsaved changes")
    assert page.get_by_label("Response", exact=True).first.input_value() == "Typed, then Alt+Right at once."

    # Typing, then straight to the search box: the filter hides the example, the edit stays with it.
    replace_text(page, "Response", "Typed, then a search at once.")
    page.get_by_label("Search text", exact=True).click()
    page.keyboard.type("no such words anywhere")
    page.keyboard.press("Enter")
    page.get_by_text(f"Unsaved edits kept for #{first}").wait_for()
    page.get_by_label("Search text", exact=True).fill("")
    page.keyboard.press("Enter")
    heading(page, f"Example #{first} · approved · unsaved changes")
    assert page.get_by_label("Response", exact=True).first.input_value() == "Typed, then a search at once."
    page.get_by_text(f"Unsaved edits kept for #{first}").wait_for(state="detached")  # it is in view again
    shot(page, "a4-unsaved-edit-kept")
    assert example(server, first) == saved  # nothing was written
    page.get_by_role("button", name="Discard my changes").click()
    page.get_by_role("heading", name=f"Example #{first} · approved", exact=True).wait_for()
    wait_idle(page)
    assert page.get_by_label("Response", exact=True).first.input_value() == saved["turns"][1]["content"]


def test_a_reload_keeps_the_open_example_and_the_filters(server, drafts, page):
    login(page, server.url, "ann", PASSWORD)
    open_annotate(page, server, "?status=approved")
    page.keyboard.press("Alt+ArrowRight")
    wait_idle(page)
    page.keyboard.press("Alt+ArrowRight")
    wait_idle(page)
    third = open_id(page)
    page.reload()
    page.get_by_role("button", name="Save & next").wait_for()
    wait_idle(page)
    assert open_id(page) == third
    assert example(server, third)["status"] == "approved"  # only approved ones are listed: the filter came back
    assert "draft ×" not in page.get_by_test_id("stMultiSelect").first.inner_text()


@pytest.mark.parametrize("size", [(1400, 1000), (1024, 768)])
def test_the_editor_fits_the_window_and_the_guidelines_do_not_push_it_away(server, drafts, browser, size):
    width, height = size
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    login(page, server.url, "ann", PASSWORD)
    open_annotate(page, server, "?status=approved")  # a demo example
    parts = {"Instruction": page.get_by_label("Instruction", exact=True).first,
             "Response": page.get_by_label("Response", exact=True).first,
             "Save & next": page.get_by_role("button", name="Save & next"),
             "Submit": page.get_by_role("button", name="Submit")}

    def out_of_view() -> list[str]:
        boxes = {name: loc.bounding_box() for name, loc in parts.items()}
        return [name for name, b in boxes.items()
                if b is None or b["y"] < 0 or b["y"] + b["height"] > height or b["x"] + b["width"] > width]

    shot(page, f"a4-editor-{width}x{height}")
    assert out_of_view() == []
    top = parts["Response"].bounding_box()["y"]
    page.get_by_role("button", name="Guidelines").click()
    page.get_by_test_id("stPopoverBody").wait_for()
    shot(page, f"a4-guidelines-{width}x{height}")
    assert parts["Response"].bounding_box()["y"] == top and out_of_view() == []
    ctx.close()


def test_a_conflict_shows_both_versions_above_the_buttons_in_view(server, drafts, page):
    login(page, server.url, "ann", PASSWORD)
    open_annotate(page, server, "?status=approved")
    first = open_id(page)
    replace_text(page, "Response", "My answer, typed while someone else saved.")
    with sqlite3.connect(server.workspace / "studio.db") as con:  # another user's save, meanwhile
        con.execute("UPDATE example SET version = version + 1, turns = json_set(turns, '$[1].content', "
                    "'Their answer.') WHERE id = ?", (first,))
    page.keyboard.press("Control+Enter")
    page.get_by_text("was changed by someone else").wait_for()
    wait_idle(page)
    shot(page, "a4-conflict-1400x1000")
    save = page.get_by_role("button", name="Save & next").bounding_box()
    for text in ("Their answer.", "My answer, typed while someone else saved."):
        box = page.get_by_test_id("stCode").filter(has_text=text).bounding_box()
        assert 0 <= box["y"] and box["y"] + box["height"] <= save["y"]  # both versions above the buttons
    assert save["y"] + save["height"] <= 1000  # and the buttons still in the window
