"""Failure drafts keep the review blind in a real browser (issue 19): while an eval set is still scored on Compare,
a reviewer who opens Annotate on a draft made by "Send failures to annotation" reads neither the run's name, nor its
scores, nor the base model's answer; an engineer opening the same draft still reads where it came from."""
import pytest
from sqlmodel import select

from core.evaluate.failures import send_failures
from storage.models import Project, User
from tests.e2e.conftest import cli, login, logout, shot, wait_idle
from tests.helpers import make_outputs, score_failures

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-123"


@pytest.fixture(scope="module")
def people(server):
    cli(server, "users", "add", "blindeng", "--role", "engineer", "--password", PASSWORD)
    for name in ("blindrev", "blindrev2"):
        cli(server, "users", "add", name, "--role", "reviewer", "--password", PASSWORD)


def sent_draft(session) -> tuple[int, dict]:
    """An eval set whose run (named "secret-lora-0") lost to the base on prompt 1, scored by the two reviewers, and
    the engineer's "Send failures to annotation" of it, assigned to the first reviewer: the draft's id and origin."""
    who = {u.username: u for u in session.exec(select(User))}
    project = session.exec(select(Project).order_by(Project.id)).first()
    es, systems = make_outputs(session, project, who["blindeng"], n_prompts=4, runs=1, references=False)
    score_failures(session, es, [who["blindrev"], who["blindrev2"]])
    out = send_failures(session, who["blindeng"], es.id, systems[1], rule="either", criterion="accuracy",
                        threshold=2, assignee=who["blindrev"].id)
    assert out["sent"] == 2, out
    from storage.models import Example

    ex = session.get(Example, out["example_ids"][0])
    return ex.id, ex.origin


def everything_shown(page) -> str:
    """The page's text and every text box's value (a draft's answer and note are box values, not page text)."""
    boxes = page.locator("textarea, input").evaluate_all("els => els.map(e => e.value)")
    return page.inner_text("body") + "\n" + "\n".join(boxes)


def open_draft(page, server, example_id: int) -> None:
    page.goto(f"{server.url}/annotate?example={example_id}")
    page.get_by_role("heading", name=f"Example #{example_id} · draft").wait_for(timeout=90_000)
    page.get_by_text("A failure", exact=False).first.wait_for()
    wait_idle(page)


def test_a_reviewer_opening_a_failure_draft_reads_no_run_score_or_base_answer(server, people, server_db, page):
    example_id, origin = sent_draft(server_db)
    login(page, server.url, "blindrev", PASSWORD)
    open_draft(page, server, example_id)
    shot(page, "b19-failure-draft-reviewer")
    shown = everything_shown(page)
    assert "too vague" in shown  # the reviewers' comment reaches the annotator (in the note)
    for secret in ("secret-lora", f"run {origin['run'].split(':')[1]}", "I am not sure about", "lost to the base",
                   "base model's answer", "accuracy", "<=", "mean "):
        assert secret not in shown, f"{secret!r} is shown to a reviewer:\n{shown}"

    # The engineer who sent it still sees where it came from.
    logout(page)
    login(page, server.url, "blindeng", PASSWORD)
    open_draft(page, server, example_id)
    assert "secret-lora-0" in everything_shown(page)
