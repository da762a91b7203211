"""A reviewer fixes a resubmitted example in a real browser: what gets approved is the text as typed, whether
the reviewer presses Alt+A while still in the field or clicks Approve (issue 18: the fix was silently dropped
and the original approved)."""
import json
import re

import pytest
from sqlmodel import select

from core.curate import curation as cur
from storage.models import Example, User
from tests.e2e.conftest import cli, login, shot, wait_idle

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-123"


@pytest.fixture(scope="module")
def people(server):
    cli(server, "users", "add", "fixann", "--role", "annotator", "--password", PASSWORD)
    cli(server, "users", "add", "fixrev", "--role", "reviewer", "--password", PASSWORD)


def resubmitted(server, session, question: str) -> int:
    """An example submitted, rejected with a reason, edited and submitted again; the only one waiting."""
    data = server.workspace / "imports" / f"{abs(hash(question))}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps({"instruction": question, "input": "", "output": "Press button A."}) + "\n",
                    encoding="utf-8")
    cli(server, "import", str(data))
    ann = session.exec(select(User).where(User.username == "fixann")).one()
    rev = session.exec(select(User).where(User.username == "fixrev")).one()
    ex = session.exec(select(Example).where(Example.status == "draft").order_by(Example.id.desc())).first()
    cur.save_example(session, ann, ex.id, expected_version=ex.version, system=ex.system, turns=ex.turns,
                     submit=True)
    cur.review_example(session, rev, ex.id, "reject", "Say which button.")
    ex = cur.get_example(session, ex.id)
    cur.save_example(session, ann, ex.id, expected_version=ex.version, system=ex.system, submit=True,
                     turns=[ex.turns[0], {"role": "assistant", "content": "Press the button."}])
    return ex.id


def fix_in_browser(server, page, example_id: int, text: str) -> None:
    login(page, server.url, "fixrev", PASSWORD)
    page.get_by_role("link", name="Review data", exact=True).click()
    page.get_by_role("heading", name=f"Example #{example_id}").wait_for()
    page.get_by_text("Rejected before. The reason given then:").wait_for()
    wait_idle(page)
    page.get_by_text("Fix it myself (then approve)").click()
    box = page.get_by_label("Assistant", exact=True)
    box.wait_for()
    wait_idle(page)
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


def approved_text(session, example_id: int) -> tuple[str, str]:
    session.expire_all()
    ex = session.get(Example, example_id)
    return ex.status, ex.turns[-1]["content"]


def test_alt_a_pressed_while_typing_a_fix_approves_the_fix(server, people, server_db, page):
    example_id = resubmitted(server, server_db, "How do I read my smart meter, please?")
    fix_in_browser(server, page, example_id, "Press the blue button A until the display shows IMP.")
    page.keyboard.press("Alt+a")  # still in the field
    page.get_by_text(f"approved #{example_id}", exact=False).wait_for()
    wait_idle(page)
    shot(page, "r1-review-fix-alt-a")
    assert approved_text(server_db, example_id) == ("approved", "Press the blue button A until the display shows IMP.")


def test_clicking_approve_after_typing_a_fix_approves_the_fix(server, people, server_db, page):
    example_id = resubmitted(server, server_db, "Can I have paper bills by post, please?")
    fix_in_browser(server, page, example_id, "Yes: choose paper bills under Account, Preferences.")
    page.get_by_role("button", name=re.compile(r"^Approve(?! all)")).click()  # its name also holds "Alt+A"
    page.get_by_text(f"approved #{example_id}", exact=False).wait_for()
    wait_idle(page)
    assert approved_text(server_db, example_id) == ("approved", "Yes: choose paper bills under Account, Preferences.")
