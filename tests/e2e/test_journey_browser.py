"""The whole loop in one browser run, by four people, each in their own browser context (own session cookie):

an annotator imports a file with two bad lines and annotates with the keyboard; a reviewer rejects one example
with Alt+X right after typing the reason; the annotator reads the reason, fixes and resubmits; the reviewer
approves the rest with Alt+A and freezes a version; an engineer trains with the quick preset (a tiny random
model from a local folder, a few steps) and generates answers of the base model and the run on the version's
test split; two reviewers score blind (no system is named on the page), one sends an item back and the
annotator finds it in the queue with its origin; the engineer reads the leaderboard and downloads DPO pairs.
Every step asserts what the page shows and leaves a screenshot artifacts/screenshots/journey-WxH-NN-*.png.
It runs in a 1400x1000 and a 1024x768 window (a fresh server each): at both sizes the annotator's editor, the
engineer's live panel and the reviewer's score controls are in the window without scrolling, and a screenshot of
the window alone (journey-WxH-NN-*-window.png) shows each.
"""
from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest

from core.train.config import PRESET_HELP
from tests.e2e.conftest import cli, grid_text, login, out_of_view, running_server, shot, window_shot
from tests.e2e.steps import body, go, idle, pick, replace_text, set_field, settle, wait_text

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
PASSWORD = "e2e-password-123"
LONG = 300_000  # background jobs on a loaded 2-core machine: training and generation start Python + torch
GOOD = [("How do I submit a meter reading online?", "Use the website."),
        ("Why is my first bill an estimate?", "We had no reading."),
        ("Can I move my payment date to the 15th?", "Yes."),
        ("What do I do if my prepayment meter runs out overnight?", "Top up."),
        ("How long does a switch of supplier take?", "A few weeks.")]
REASON = "Say where on the website: Account > Meter readings, and that a photo helps."
FIXED = ("Log in, open Account > Meter readings, enter the numbers shown on the meter (ignore any red digits) "
         "and press Submit. A photo of the meter helps if we query it.")
COMMENT = "Both answers are noise. The customer needs the emergency number first, then the steps."


def jsonl_with_two_bad_lines(path) -> None:
    """Five good Alpaca records, line 3 broken JSON and line 6 a record without an answer."""
    lines = [json.dumps({"instruction": q, "input": "", "output": a}) for q, a in GOOD]
    lines.insert(2, '{"instruction": "Is the broken line skipped?", "output": ')
    lines.insert(5, json.dumps({"instruction": "An instruction with no answer", "input": "", "output": ""}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def votes(server) -> tuple[int, int, int]:
    """(run wins, ties or both bad, base wins) over the stored blind scores, read straight from the database."""
    with sqlite3.connect(server.workspace / "studio.db") as con:
        rows = con.execute("SELECT system_a, system_b, preference FROM score").fetchall()
    winners = [a if pref == "A" else b if pref == "B" else None for a, b, pref in rows]
    return (sum(1 for w in winners if w and w.startswith("run")), winners.count(None),
            sum(1 for w in winners if w == "base"))


def download(page, button: str, folder) -> str:
    """Click a download button and return the text of the file the browser received."""
    with page.expect_download() as info:
        page.get_by_role("button", name=button).click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path.read_text(encoding="utf-8")


def drafts(server) -> list[int]:
    """Ids of the draft examples (the imported ones), to name them in the assertions."""
    with sqlite3.connect(server.workspace / "studio.db") as con:
        return [r[0] for r in con.execute("SELECT id FROM example WHERE status = 'draft' ORDER BY id")]


class People:
    """One browser context (so one session cookie) per person; on a failure, a screenshot of each one's page."""

    def __init__(self, browser, server, size: tuple[int, int]):
        self.browser, self.server, self.pages = browser, server, {}
        self.width, self.height = size
        self.started = time.monotonic()

    def open(self, username: str):
        ctx = self.browser.new_context(viewport={"width": self.width, "height": self.height}, accept_downloads=True)
        page = self.pages[username] = ctx.new_page()
        page.set_default_timeout(60_000)
        login(page, self.server.url, username, PASSWORD)
        return page

    def step(self, name: str) -> None:
        """Print the time into the journey (shown with -s or on a failure): where the minutes go."""
        print(f"{self.width}x{self.height} {time.monotonic() - self.started:6.1f} s  {name}", flush=True)

    def shot(self, page, name: str) -> None:
        """A full-page screenshot named after the window size: journey-WxH-NN-what.png."""
        shot(page, f"journey-{self.width}x{self.height}-{name}")

    def in_view(self, page, name: str, **parts) -> None:
        """Assert each named locator is wholly in the window, and keep a screenshot of the window alone."""
        window_shot(page, f"journey-{self.width}x{self.height}-{name}-window")
        assert out_of_view(page, parts) == {}, f"out of the {self.width}x{self.height} window at {name}"


def sheet_choices(page) -> list[str]:
    """What the Compare page's score sheet shows as chosen: "accuracy_A=4", ..., "pref=A"."""
    return page.evaluate("""() => [...document.querySelectorAll('*')].filter(e => e.shadowRoot)
        .flatMap(e => [...e.shadowRoot.querySelectorAll('[aria-pressed=true]')])
        .map(b => b.dataset.pref ? 'pref=' + b.dataset.pref
                                 : b.closest('.fts-row').dataset.slot + '=' + b.dataset.value)""")


def score_blind(page, values: list[int], preference: str, done_before: int) -> None:
    """Score the open item with the keyboard only, at a person's pace: a digit per criterion and side (the sheet
    moves to the next row itself), the preference key, Ctrl+Enter."""
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page, not a field
    settle(page)
    slots = [f"{c}_{side}" for c in ("accuracy", "tone", "helpfulness") for side in ("A", "B")]
    for key in [str(v) for v in values] + [preference.lower()]:
        page.keyboard.press(key)
        page.wait_for_timeout(150)
    shown = [f"{slot}={v}" for slot, v in zip(slots, values)] + [f"pref={preference}"]
    assert sheet_choices(page) == shown  # shown at once, in the browser: no rerun to wait for
    page.keyboard.press("Control+Enter")
    wait_text(page, f"You have scored {done_before + 1} of")
    settle(page)


def assert_blind(page, names: list[str]) -> None:
    """Nothing in the page's HTML names a system: the base model, the run, its name or the model folder."""
    html = page.content().lower()
    for name in names:
        assert name.lower() not in html, f"the blind review page names a system: {name!r}"


@pytest.fixture(params=[(1400, 1000), (1024, 768)], ids=["1400x1000", "1024x768"])
def size(request) -> tuple[int, int]:
    return request.param


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of its own for each window size: the journey's users, versions and eval sets are made anew."""
    with running_server(tmp_path_factory, "journey") as srv:
        yield srv


def test_whole_loop_with_four_roles(fresh_server, browser, tiny_model, tmp_path, size):
    people = People(browser, fresh_server, size)
    try:
        journey(fresh_server, people, tiny_model, tmp_path)
    except BaseException:
        for username, page in people.pages.items():
            people.shot(page, f"failed-{username}")
        raise
    finally:
        for page in people.pages.values():
            page.context.close()


def journey(server, people, tiny_model, tmp_path):
    for name, role in (("anna", "annotator"), ("rex", "reviewer"), ("rita", "reviewer"), ("eve", "engineer")):
        cli(server, "users", "add", name, "--role", role, "--password", PASSWORD)
    data = tmp_path / "support_questions.jsonl"
    jsonl_with_two_bad_lines(data)

    # 1. The annotator uploads the file: five records in, lines 3 and 6 rejected with their reasons.
    people.step("1 import")
    anna = people.open("anna")
    go(anna, "Import")
    anna.locator('input[type="file"]').set_input_files(str(data))
    anna.get_by_role("button", name="Import", exact=True).wait_for()
    idle(anna)
    anna.get_by_role("button", name="Import", exact=True).click()
    anna.get_by_text("Report").wait_for()
    idle(anna)
    text = body(anna)
    assert "Read\n\n7" in text and "Imported\n\n5" in text and "Rejected\n\n2" in text, text
    rejected = grid_text(anna)
    assert "3\tmalformed JSON" in rejected and "6\tempty field 'output'" in rejected, rejected
    people.shot(anna, "01-import-two-rejected")
    first, *rest = ids = drafts(server)
    assert len(ids) == 5

    # 2. ... annotates with the keyboard: edit, Ctrl+Enter saves and opens the next; Ctrl+Shift+Enter submits.
    people.step("2 annotate")
    go(anna, "Annotate")
    anna.get_by_role("heading", name=f"Example #{first} · draft").wait_for()
    idle(anna)
    people.in_view(anna, "02-editor", instruction=anna.get_by_label("Instruction", exact=True).first,
                   response=anna.get_by_label("Response", exact=True).first,
                   save=anna.get_by_role("button", name="Save & next"),
                   submit=anna.get_by_role("button", name="Submit").first)
    replace_text(anna, "Response", "Use the website to send the reading.")
    anna.keyboard.press("Control+Enter")
    anna.get_by_text(f"Saved #{first} (version 2).").wait_for()
    for example_id in rest + [first]:
        anna.get_by_role("heading", name=f"Example #{example_id} · draft").wait_for()
        idle(anna)
        anna.keyboard.press("Control+Shift+Enter")
        anna.get_by_text(f"Submitted #{example_id} for review").wait_for()
    anna.get_by_text("Nothing in this queue.").wait_for()
    idle(anna)
    people.shot(anna, "02-annotated-and-submitted")

    # 3. A reviewer types a reason and presses Alt+X at once: the typed reason is the one used.
    people.step("3 reject with Alt+X")
    rex = people.open("rex")
    go(rex, "Review data")
    rex.get_by_role("heading", name=f"Example #{first}").wait_for()
    idle(rex)
    wait_text(rex, "Use the website to send the reading.")  # code blocks draw a moment after the run
    rex.get_by_label("Reason", exact=False).first.click()
    rex.keyboard.type(REASON)
    rex.keyboard.press("Alt+x")
    rex.get_by_text(f"Rejected #{first}.").wait_for()
    rex.get_by_role("heading", name=f"Example #{rest[0]}").wait_for()
    idle(rex)
    assert "Say why you reject it" not in body(rex)
    people.shot(rex, "03-rejected-with-alt-x")

    # 4. The annotator sees the reason, fixes the answer and resubmits ...
    people.step("4 fix, resubmit, approve")
    anna.goto(server.url + "/annotate")
    anna.get_by_role("heading", name=f"Example #{first} · rejected").wait_for()
    idle(anna)
    assert "Rejected by the reviewer:" in body(anna) and REASON in body(anna)
    replace_text(anna, "Response", FIXED)
    anna.keyboard.press("Control+Shift+Enter")
    anna.get_by_text(f"Submitted #{first} for review").wait_for()
    idle(anna)
    people.shot(anna, "04a-fixed-and-resubmitted")
    # ... and the reviewer, seeing the earlier reason and what changed, approves it and the rest with Alt+A.
    rex.goto(server.url + "/review-data")
    rex.get_by_role("heading", name=f"Example #{first}").wait_for()
    idle(rex)
    text = body(rex)
    assert "Rejected before. The reason given then:" in text and REASON in text
    wait_text(rex, "enter the numbers shown on the meter")
    people.shot(rex, "04b-resubmitted-with-history")
    for example_id in [first] + rest:
        rex.get_by_role("heading", name=f"Example #{example_id}").wait_for()
        idle(rex)
        rex.keyboard.press("Alt+a")
        rex.get_by_text(f"Approved #{example_id}.").wait_for()
    rex.get_by_text("Nothing waiting for review.").wait_for()
    idle(rex)

    # 5. The reviewer freezes a version with train, validation and test splits.
    people.step("5 freeze")
    go(rex, "Datasets")
    rex.get_by_label("Name", exact=True).fill("journey-v1")
    rex.get_by_role("button", name="Freeze").click()
    froze = rex.get_by_text(re.compile(r"^Froze journey-v1: \d+ train, \d+ validation, \d+ test\.$"))
    froze.wait_for()
    n_train, n_validation, n_test = map(int, re.findall(r"\d+", froze.inner_text().replace("journey-v1", "")))
    # Three or more test prompts: each of the three blind scores below lands on an item of its own.
    assert n_train >= 50 and n_validation >= 1 and n_test >= 3, froze.inner_text()
    idle(rex)
    people.shot(rex, "05-frozen")

    # 6. The engineer trains with the quick preset: the tiny model from a local folder, a few steps.
    people.step("6 train")
    eve = people.open("eve")
    go(eve, "Train")
    wait_text(eve, PRESET_HELP["quick"][:40])  # the quick preset, chosen by default
    pick(eve, "Dataset version", re.compile(r"^journey-v1 "))
    eve.get_by_text("Local model folder", exact=True).click()
    idle(eve)
    set_field(eve, "Folder path", str(tiny_model))
    eve.get_by_text("More settings").click()
    set_field(eve, "Max steps (-1 = epochs)", "3")
    set_field(eve, "Run name (optional)", "journey-run")
    eve.get_by_text("Estimated peak").wait_for(timeout=120_000)
    idle(eve)
    eve.get_by_role("button", name="Train").click()
    started = eve.get_by_text(re.compile(r"^Run \d+ (started|queued)\.$"))
    started.wait_for()
    run_id = int(re.search(r"\d+", started.inner_text()).group())
    # The run just launched is where the engineer looks: its panel tops the page, the form folded away.
    people.in_view(eve, "06-live-panel", run=eve.get_by_label("Run", exact=True).first,
                   status=eve.get_by_text(re.compile(r"^Status:")).first)
    wait_text(eve, "Status: succeeded", LONG)
    wait_text(eve, "step 3 / 3")
    eve.wait_for_function("""t => [...document.querySelectorAll('[data-testid="stSelectbox"] input')]
        .some(i => i.getAttribute('aria-label') === 'Run' && i.value === t)""",
        arg=f"#{run_id} journey-run (succeeded)")
    idle(eve)
    people.shot(eve, "06-trained")

    # 7. ... makes an eval set of the version's test split and generates answers of the base model and the run.
    people.step("7 generate")
    go(eve, "Generate")
    pick(eve, "Dataset version", re.compile(r"^journey-v1 "))
    eve.get_by_label("Eval set name").first.fill("journey-eval")
    eve.get_by_role("button", name="Create eval set").first.click()
    eve.get_by_text("Eval set created.").wait_for()
    idle(eve)
    pick(eve, "Eval set", f"journey-eval ({n_test} prompts)")
    chosen = eve.locator('[data-testid="stMultiSelect"]').filter(has_text="Systems").inner_text()
    assert "Base model (no adapter)" in chosen and f"Run {run_id}: journey-run" in chosen, chosen  # preselected
    set_field(eve, "Max new tokens", "8")
    eve.get_by_role("button", name="Start generation").click()
    started = eve.get_by_text(re.compile(r"^Generation job \d+ (started|queued)\.$"))
    started.wait_for()
    gen_id = int(re.search(r"\d+", started.inner_text()).group())
    wait_text(eve, f"Job {gen_id} · succeeded", LONG)
    wait_text(eve, f"{2 * n_test} outputs")
    eve.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .some(d => d.textContent.includes('journey-eval') && d.textContent.includes('journey-run'))""")
    idle(eve)
    eve.get_by_text("Generation jobs").scroll_into_view_if_needed()
    people.shot(eve, "07-generated")
    go(eve, "Home", "finetune-studio")  # nothing live left polling on the engineer's page while the reviewers work

    # 8. Two reviewers score blind; no page names a system. The second sends an item back to annotation.
    people.step("8 blind review, send back")
    hidden = ["base model", "adapter", "journey-run", f"run {run_id}:", str(tiny_model)]
    go(rex, "Compare")
    pick(rex, "Eval set", "journey-eval")
    wait_text(rex, f"You have scored 0 of {n_test} items.")
    assert_blind(rex, hidden)
    # The controls, not the answers: a long prompt and its answers scroll in their column beside them.
    people.in_view(rex, "08-score-controls", sheet=rex.locator(".fts-rubric").first,
                   submit=rex.get_by_role("button", name="Submit and next"))
    score_blind(rex, [4, 2, 4, 3, 4, 2], "A", 0)
    assert_blind(rex, hidden)
    score_blind(rex, [2, 4, 3, 3, 2, 4], "B", 1)
    people.shot(rex, "08a-scored-blind")

    rita = people.open("rita")
    go(rita, "Compare")
    pick(rita, "Eval set", "journey-eval")
    wait_text(rita, f"You have scored 0 of {n_test} items.")
    assert_blind(rita, hidden)
    score_blind(rita, [5, 1, 4, 2, 5, 1], "A", 0)
    prompt = rita.locator('[data-testid="stChatMessageContent"]').first.inner_text().strip()
    rita.get_by_label("Comment (optional)").fill(COMMENT)
    rita.get_by_text("Send back to annotation").click()
    wait_text(rita, "in the test split of dataset version")  # the leak warning
    rita.get_by_text("An empty answer", exact=True).click()
    idle(rita)
    rita.get_by_role("button", name="Send back").click()
    sent = rita.get_by_text(re.compile(r"^Sent back to the annotation queue as example #\d+\.$"))
    sent.wait_for()
    sent_id = int(re.search(r"\d+", sent.inner_text()).group())
    assert_blind(rita, hidden)
    people.shot(rita, "08b-sent-back")

    # ... and the annotator finds the draft in the queue, marked as sent back, with its origin and the comment.
    anna.goto(server.url + "/annotate")
    row = anna.get_by_text(re.compile(rf"^#{sent_id} · draft · sent back · "))
    row.wait_for()
    row.click()
    anna.get_by_role("heading", name=f"Example #{sent_id} · draft").wait_for()
    idle(anna)
    text = body(anna)
    assert re.search(r"Sent back from a blind review on the Compare page: eval set journey-eval, prompt \d+, by "
                     r"reviewer rita", text), text
    assert f"Reviewer's comment: {COMMENT}" in text
    excerpt = row.inner_text().split(" · ", 3)[3].rstrip("…")
    assert " ".join(prompt.split()).startswith(excerpt), (excerpt, prompt)
    people.shot(anna, "08c-sent-back-draft-in-queue")

    # 9. The engineer reads the results (the only page naming systems) and downloads the DPO pairs.
    people.step("9 results")
    go(eve, "Results")
    pick(eve, "Eval set", "journey-eval")
    eve.get_by_text("Win / tie / loss per pair").wait_for()
    idle(eve)
    assert "Prompts\n\n" + str(n_test) in body(eve) and "Scores\n\n3" in body(eve), body(eve)
    eve.wait_for_function("""run => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .some(d => d.textContent.includes('base model') && d.textContent.includes(run))""",
        arg=f"run {run_id}: journey-run")
    eve.wait_for_function("""() => document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas,'
        + ' [data-testid="stVegaLiteChart"] svg').length >= 2""")
    people.shot(eve, "09a-results")
    # The win rate of the run against the base model, as the page's report gives it, is the reviewers' votes.
    report = download(eve, "Comparison report (Markdown)", tmp_path)
    section = report.split("## Win / tie / loss")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if re.match(r"\| (base model|run \d+: journey-run) \| ", line))
    first_label, _, a_rate, tie_rate, b_rate, n = [c.strip() for c in row.strip("|").split("|")]
    run_wins, ties, base_wins = votes(server)
    rates = (run_wins, ties, base_wins) if first_label.startswith("run") else (base_wins, ties, run_wins)
    assert (a_rate, tie_rate, b_rate, n) == tuple(f"{round(100 * r / 3)}%" for r in rates) + ("3",), row
    people.step("9 win rate checked")

    eve.get_by_role("button", name="Export DPO pairs").click()
    written = eve.get_by_text(re.compile(r"^\d+ pairs written to"))
    written.wait_for()
    n_pairs = int(written.inner_text().split()[0])
    pairs = [json.loads(line) for line in download(eve, "Download dpo.jsonl", tmp_path).splitlines() if line]
    assert len(pairs) == n_pairs == run_wins + base_wins  # one per item with a majority for A or B
    for p in pairs:
        assert set(p) == {"prompt", "chosen", "rejected"}, p
        assert p["prompt"][-1]["role"] == "user" and p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
    idle(eve)
    people.shot(eve, "09b-dpo-exported")
    people.step("done")
