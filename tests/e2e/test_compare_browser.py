"""Blind review as reviewers do it, in a real browser: digits typed at a normal pace each land on the row they
name and are saved as typed, a key that cannot be a score is refused where the reviewer looks, and the prompt,
its reference answer and the score controls are all in view without scrolling."""
import json
import re
import sqlite3

import pytest

from tests.e2e.conftest import cli, grid_text, login, shot, wait_idle

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-123"
REFERENCE = "Read the meter from left to right and ignore the red digits."
N_PROMPTS = 8
SLOTS = [(c, side) for c in ("accuracy", "tone", "helpfulness") for side in ("A", "B")]


@pytest.fixture(scope="module")
def eval_set(server):
    """An eval set of eight prompts with a reference each, answered by the base model and a run, and a reviewer."""
    prompts = server.workspace / "imports" / "compare-prompts.jsonl"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    prompts.write_text("".join(json.dumps({"prompt": f"How do I read meter number {i}?", "reference": REFERENCE,
                                           "must_contain": "left to right"})
                               + "\n" for i in range(N_PROMPTS)), encoding="utf-8")
    cli(server, "evalsets", "--create", "compare-set", "--from-file", str(prompts))
    cli(server, "users", "add", "rev", "--role", "reviewer", "--password", PASSWORD)
    from sqlmodel import Session, select

    from core.evaluate.evalsets import eval_prompts
    from storage.db import get_engine, reset_engines
    from storage.models import EvalSet, Job, JobStatus, Output

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_STUDIO_HOME", str(server.workspace))
        mp.delenv("DATABASE_URL", raising=False)
        reset_engines()
        with Session(get_engine(), expire_on_commit=False) as session:
            es = session.exec(select(EvalSet).where(EvalSet.name == "compare-set")).one()
            run = Job(project_id=es.project_id, kind="train", name="secret-run", status=JobStatus.succeeded.value,
                      run_dir="/nonexistent/secret-run")
            session.add(run)
            session.commit()
            for p in eval_prompts(session, es.id):
                for system in ("base", f"run:{run.id}"):
                    session.add(Output(prompt_id=p.id, system=system, text=f"Answer {p.id}: look at the display.\n" * 8,
                                       decoding={"mode": "greedy", "max_new_tokens": 96 if system == "base" else 256,
                                                 "seed": 0}, n_new_tokens=7))
            session.commit()
            es_id = es.id
        reset_engines()
    return es_id


def saved_scores(server, es_id: int) -> list[tuple[dict, str]]:
    """(scores, preference) of every saved score of the eval set, oldest first, in the reviewer's A/B terms."""
    with sqlite3.connect(server.workspace / "studio.db") as con:
        rows = con.execute("SELECT s.scores, s.preference FROM score s JOIN evalprompt p ON p.id = s.prompt_id "
                           "WHERE p.eval_set_id = ? ORDER BY s.id", (es_id,)).fetchall()
    return [(json.loads(scores), pref) for scores, pref in rows]


def open_compare(page, server) -> None:
    login(page, server.url, "rev", PASSWORD)
    page.goto(server.url + "/compare")
    page.get_by_text(re.compile(rf"You have scored \d+ of {N_PROMPTS} items")).wait_for()
    wait_idle(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page, not a field


def type_item(page, digits: list[int], preference: str, pause_ms: int, done_before: int) -> None:
    """Type a digit per rubric row, the preference key and Ctrl+Enter, ``pause_ms`` apart, as a person does."""
    for key in [str(d) for d in digits] + [preference]:
        page.keyboard.press(key)
        page.wait_for_timeout(pause_ms)
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"You have scored {done_before + 1} of {N_PROMPTS} items.").wait_for()
    wait_idle(page)


def test_digits_typed_at_a_normal_pace_are_saved_row_by_row(server, eval_set, page):
    open_compare(page, server)
    typed = [[4, 2, 5, 1, 3, 2], [1, 5, 2, 4, 5, 3], [2, 3, 4, 5, 1, 2]]
    prefs = ["a", "b", "t"]
    for n, (digits, pref) in enumerate(zip(typed, prefs)):
        # 300 ms apart for the first two items; the third as fast as the keyboard repeats.
        type_item(page, digits, pref, 300 if n < 2 else 0, n)
    saved = saved_scores(server, eval_set)
    assert len(saved) == 3
    for (scores, preference), digits, pref in zip(saved, typed, prefs):
        assert [scores[c][side] for c, side in SLOTS] == digits
        assert preference == {"a": "A", "b": "B", "t": "tie"}[pref]


def test_a_key_that_is_not_a_score_is_refused_visibly(server, eval_set, page):
    open_compare(page, server)
    done = len(saved_scores(server, eval_set))
    status = page.get_by_test_id("ftsRubricStatus")
    page.keyboard.press("Control+Enter")  # refused on the server: nothing scored yet; the sheet opens again
    page.get_by_text("Give accuracy a score for A.").wait_for()
    wait_idle(page)
    page.keyboard.press("7")  # the rubric is 1-5
    page.get_by_text("7 is not a score for Accuracy (1–5): nothing was recorded.").wait_for()
    assert status.get_attribute("data-refused") == "1"
    for d in (3, 3, 3, 3, 3, 3, 4):  # one digit more than there are rows
        page.keyboard.press(str(d))
    page.get_by_text(re.compile("Every row is scored, so 4 was not recorded")).wait_for()
    chosen = page.evaluate("""() => [...document.querySelectorAll('*')].filter(e => e.shadowRoot)
        .flatMap(e => [...e.shadowRoot.querySelectorAll('.fts-score[aria-pressed=true]')])
        .map(b => b.closest('.fts-row').dataset.slot + '=' + b.dataset.value)""")
    assert chosen == [f"{c}_{side}=3" for c, side in SLOTS]
    page.keyboard.press("ArrowUp")  # back to the last row, which takes the next digit
    page.keyboard.press("5")
    page.keyboard.press("x")
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"You have scored {done + 1} of {N_PROMPTS} items.").wait_for()
    wait_idle(page)
    scores, preference = saved_scores(server, eval_set)[-1]
    assert [scores[c][side] for c, side in SLOTS] == [3, 3, 3, 3, 3, 5] and preference == "both_bad"


@pytest.mark.parametrize("width, height", [(1400, 1000), (1024, 768)])
def test_reference_and_score_controls_are_in_view_without_scrolling(server, eval_set, browser, width, height):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    open_compare(page, server)
    shot(page, f"compare-{width}x{height}")
    in_view = page.evaluate("""() => {
        const host = [...document.querySelectorAll('*')].find(e => e.shadowRoot
                                                                && e.shadowRoot.querySelector('.fts-rubric'));
        const boxes = {
          sheet: host && host.shadowRoot.querySelector('.fts-rubric'),
          submit: [...document.querySelectorAll('button')].find(b => b.innerText.includes('Submit and next')),
          reference: [...document.querySelectorAll('[data-testid=stText]')]
                       .find(t => t.innerText.includes('ignore the red digits')),
          answer_a: [...document.querySelectorAll('p, strong')].find(t => t.innerText === 'Answer A'),
        };
        const out = {};
        for (const [name, el] of Object.entries(boxes)) {
          if (!el) { out[name] = 'missing'; continue; }
          const r = el.getBoundingClientRect();
          out[name] = r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth
            ? 'in view' : `top ${r.top}, bottom ${r.bottom}, right ${r.right}`;
        }
        return out;
    }""")
    assert in_view == {"sheet": "in view", "submit": "in view", "reference": "in view", "answer_a": "in view"}
    ctx.close()


def test_results_tables_fit_the_window_and_say_what_differs(server, eval_set, page):
    """After the reviews above: every table under human headers with no "None" cell, the failing answers' text
    columns on the page at 1400 px, and the decoding settings the systems' answers differ in named."""
    user, password = server.admin_credentials()
    login(page, server.url, user, password)
    page.goto(server.url + "/results")
    page.get_by_text("Automatic metrics against references").wait_for()
    wait_idle(page)
    page.get_by_text(re.compile(r"^Failing answers \(\d+\)$")).click()
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .some(d => d.textContent.includes('prompt #') && d.textContent.includes('reference'))""")
    wait_idle(page)
    shot(page, "results-1400x1000")
    warning = page.get_by_text(re.compile("different decoding settings")).inner_text()
    assert "max new tokens: base model 96, run " in warning and "secret-run 256" in warning, warning
    cells = grid_text(page)
    assert "None" not in cells.split("\t") and "\tNone" not in cells, cells
    for header in ("percent_agreement", "validation_perplexity", "mean_new_tokens", "pass_rate"):
        assert header not in cells
    assert "% agreement" in cells and "mean new tokens" in cells
    overflow = page.evaluate("""() => [...document.querySelectorAll('[data-testid=stDataFrame]')]
        .filter(d => d.textContent.includes('prompt #'))
        .map(d => { const s = d.querySelector('.dvn-scroller'); return s ? s.scrollWidth - s.clientWidth : -1; })""")
    assert overflow and all(0 <= px <= 1 for px in overflow), overflow
