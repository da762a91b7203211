"""AppTest of daily annotating and reviewing: Save & next / Skip / Previous move on with a confirmation and
text typed for an example lands on that example; the queue tells rows apart; hints reach the live editor;
a reviewer sees an earlier rejection, the history and the diff, fixes a typo, and bulk-approves a selection."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.curate import curation as cur
from storage.models import Example
from tests.helpers import area, click, heading

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are the support assistant of Brightwater Gas & Electric."


def app(path, user, project):
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at.run()


def three_drafts(session, users, project):
    ann = users["annotator"]
    return [cur.create_example(session, ann, project, system=SYSTEM,
                               turns=[{"role": "user", "content": q}, {"role": "assistant", "content": a}])
            for q, a in [("How do I read my meter?", "Note the digits left to right."),
                         ("Can I get paper bills?", "Yes, ask us by phone."),
                         ("Why did my bill double?", "Check the meter reading first.")]]


def field(at, label):
    return next(t for t in at.text_input if t.label == label)


def test_save_and_next_moves_on_confirms_and_the_next_edit_lands_on_the_next_example(session, users, project):
    a, b, c = three_drafts(session, users, project)
    at = app("pages/annotate.py", users["annotator"], project)
    assert heading(at) == f"Example #{a.id} · draft"
    area(at, "Response").set_value("Note the digits from left to right, ignoring the red ones.")
    click(at, "Save & next")
    assert not at.exception
    assert heading(at) == f"Example #{b.id} · draft"
    assert f"Saved #{a.id} (version 2)." in at.session_state["_flash"]
    assert area(at, "Instruction").value == "Can I get paper bills?"
    field(at, "Tags (comma separated)").set_value("billing, paper")
    click(at, "Save & next")
    assert heading(at) == f"Example #{c.id} · draft"
    session.expire_all()
    first, second = session.get(Example, a.id), session.get(Example, b.id)
    assert (first.version, first.tags) == (2, [])
    assert (second.version, second.tags) == (2, ["billing", "paper"])
    assert first.turns[1]["content"].endswith("ignoring the red ones.")


def test_skip_and_previous_move_without_saving_and_keep_the_unsaved_edit(session, users, project):
    a, b, c = three_drafts(session, users, project)
    at = app("pages/annotate.py", users["annotator"], project)
    area(at, "Response").set_value("Not saved, but not lost.")
    click(at, "Skip")
    assert heading(at) == f"Example #{b.id} · draft"
    assert f"#{a.id}'s unsaved edit is kept (not saved): open it again to save it." in at.session_state["_flash"]
    assert at.radio[0].options[0].startswith(f"#{a.id} · draft · unsaved changes · ")
    click(at, "Skip")
    click(at, "Skip")
    assert heading(at) == f"Example #{c.id} · draft"
    assert "This is the last example in the queue." in at.session_state["_flash"]
    click(at, "Previous")
    click(at, "Previous")
    assert heading(at) == f"Example #{a.id} · draft · unsaved changes"
    assert area(at, "Response").value == "Not saved, but not lost."
    session.expire_all()
    assert session.get(Example, a.id).version == 1
    click(at, "Discard my changes")
    assert heading(at) == f"Example #{a.id} · draft"
    assert area(at, "Response").value == "Note the digits left to right."


def test_clicking_the_queue_opens_that_example(session, users, project):
    a, b, c = three_drafts(session, users, project)
    at = app("pages/annotate.py", users["annotator"], project)
    at.radio[0].set_value(c.id).run()
    assert heading(at) == f"Example #{c.id} · draft"
    click(at, "Previous")
    assert heading(at) == f"Example #{b.id} · draft"


def test_queue_rows_show_the_first_user_message_not_the_system_prompt(session, users, project):
    a, b, _ = three_drafts(session, users, project)
    at = app("pages/annotate.py", users["annotator"], project)
    options = at.radio[0].options
    assert options[0] == f"#{a.id} · draft · How do I read my meter?"
    assert options[1] == f"#{b.id} · draft · Can I get paper bills?"
    table = at.dataframe[0].value
    assert list(table["first user message"][:2]) == ["How do I read my meter?", "Can I get paper bills?"]


def test_hints_go_to_the_live_editor_with_the_same_wording(session, users, project):
    ann = users["annotator"]
    cur.create_example(session, ann, project, turns=[{"role": "user", "content": "Hi?"},
                                                     {"role": "assistant", "content": "Yes."}])
    at = app("pages/annotate.py", ann, project)
    hints = next(json.loads(el.proto.json) for el in at.get("bidi_component")
                 if el.proto.component_name == "fts_live_hints")
    assert [f["label"] for f in hints["fields"]] == ["Instruction", "Response", "System prompt", "Input (optional)"]
    assert hints["hints"] == [{"level": "warning", "text": "A response is very short (under 3 words).",
                               "kind": "short"}]
    assert hints["line"].startswith(f"{hints['tokens']} tokens of max {project.max_length}")
    assert hints["texts"] == cur.HINT_TEXTS


def submitted(session, users, project, n=3, tags=("billing",)):
    ann = users["annotator"]
    return [cur.create_example(session, ann, project,
                               turns=[{"role": "user", "content": f"Question {i} on bills?"},
                                      {"role": "assistant", "content": f"Answer number {i} here."}],
                               tags=list(tags) if i < n - 1 else ["outage"], submit=True) for i in range(n)]


def texts(at) -> str:
    return "\n".join(str(el.value) for kind in ("text", "warning", "caption", "code", "success", "error", "subheader")
                     for el in getattr(at, kind))


def test_review_shows_the_earlier_rejection_the_history_and_the_diff(session, users, project):
    ann, rev = users["annotator"], users["reviewer"]
    ex = submitted(session, users, project, n=1)[0]
    cur.review_example(session, rev, ex.id, "reject", "Name the meter type.")
    ex = cur.get_example(session, ex.id)
    cur.save_example(session, ann, ex.id, expected_version=ex.version, system="", submit=True,
                     turns=[{"role": "user", "content": "Question 0 on bills?"},
                            {"role": "assistant", "content": "On a smart meter, press A."}], tags=["outage"])
    at = app("pages/review_data.py", rev, project)
    shown = texts(at)
    assert "Rejected before. The reason given then:" in shown
    assert "Name the meter type.\n(version 2, reviewer1," in shown
    diff = next(c.value for c in at.code if c.language == "diff")
    assert "-[assistant] Answer number 0 here." in diff and "+[assistant] On a smart meter, press A." in diff
    history = at.dataframe[0].value
    assert list(history["step"]) == ["created", "rejected", "submitted"]
    assert list(history["who"]) == ["annotator1", "reviewer1", "annotator1"]


def test_reviewer_fixes_a_typo_and_approves(session, users, project):
    ex = submitted(session, users, project, n=1)[0]
    at = app("pages/review_data.py", users["reviewer"], project)
    at.toggle[0].set_value(True).run()
    area(at, "Assistant").set_value("Answer number 0, spelled right.")
    click(at, "Approve")  # the one Approve button (and Alt+A) approves the text as fixed
    assert not at.exception
    session.expire_all()
    fixed = session.get(Example, ex.id)
    assert (fixed.status, fixed.turns[1]["content"]) == ("approved", "Answer number 0, spelled right.")
    assert f"Fixed and approved #{ex.id}." in at.session_state["_flash"]


def test_no_review_button_drops_a_typed_fix(session, users, project):
    ex = submitted(session, users, project, n=2)[0]
    at = app("pages/review_data.py", users["reviewer"], project)
    at.toggle[0].set_value(True).run()
    area(at, "Assistant").set_value("Answer number 0, with the meter type.")
    field(at, "Reason (needed to reject; the annotator sees it)").set_value("Name the meter.")
    click(at, "Reject")
    assert any("a rejection would drop your fix" in e.value for e in at.error)
    click(at, "Skip")
    assert any("skipping would drop your fix" in e.value for e in at.error)
    assert at.subheader[0].value == f"Example #{ex.id}"  # still here, the fix still typed
    assert area(at, "Assistant").value == "Answer number 0, with the meter type."
    assert next(b for b in at.button if b.label.startswith("Approve all")).disabled
    session.expire_all()
    assert (session.get(Example, ex.id).status, session.get(Example, ex.id).turns[1]["content"]) == (
        "submitted", "Answer number 0 here.")
    click(at, "Approve")
    session.expire_all()
    assert (session.get(Example, ex.id).status, session.get(Example, ex.id).turns[1]["content"]) == (
        "approved", "Answer number 0, with the meter type.")


def test_a_shortcut_that_arrives_with_new_filters_acts_on_no_unseen_example(session, users, project):
    made = submitted(session, users, project, n=3)
    at = app("pages/review_data.py", users["reviewer"], project)
    assert at.subheader[0].value == f"Example #{made[0].id}"
    # Search typed, then Alt+A at once: the search and the click reach the server in one run.
    field(at, "Search text").set_value("Question 2")
    next(b for b in at.button if b.label == "Approve").click()
    at.run()
    assert any(f"nothing was approved: look at #{made[2].id}" in w.value for w in at.warning)
    session.expire_all()
    assert [session.get(Example, e.id).status for e in made] == ["submitted"] * 3
    click(at, "Approve")  # now seen: approved
    session.expire_all()
    assert [session.get(Example, e.id).status for e in made] == ["submitted", "submitted", "approved"]


def test_bulk_approve_says_how_many_and_asks_first(session, users, project):
    made = submitted(session, users, project, n=3)
    at = app("pages/review_data.py", users["reviewer"], project)
    at.selectbox[0].set_value("billing").run()
    click(at, "Approve all 2 matching examples…")
    assert any("Approve all 2 submitted examples" in w.value for w in at.warning)
    session.expire_all()
    assert {session.get(Example, e.id).status for e in made} == {"submitted"}  # nothing yet
    click(at, "Cancel")
    click(at, "Approve all 2 matching examples…")
    click(at, "Yes, approve 2")
    assert not at.exception
    session.expire_all()
    assert [session.get(Example, e.id).status for e in made] == ["approved", "approved", "submitted"]
    assert "Approved 2 examples." in at.session_state["_flash"]


def test_a_conversation_is_edited_turn_by_turn_with_live_hints_on_every_turn(session, users, project):
    ann = users["annotator"]
    talk = [{"role": "user", "content": "My meter shows E1."}, {"role": "assistant", "content": "Restart it, please."},
            {"role": "user", "content": "Still E1."}, {"role": "assistant", "content": "Then call us on 0800 123."}]
    ex = cur.create_example(session, ann, project, turns=talk)
    at = app("pages/annotate.py", ann, project)
    hints = next(json.loads(el.proto.json) for el in at.get("bidi_component")
                 if el.proto.component_name == "fts_live_hints")
    assert [(f["label"], f["role"]) for f in hints["fields"]] == [
        ("Turn 1: user", "user"), ("Turn 2: assistant", "assistant"), ("Turn 3: user", "user"),
        ("Turn 4: assistant", "assistant"), ("System prompt", "system")]
    area(at, "Turn 4: assistant").set_value("Then call us on 0800 123; we send an engineer.")
    click(at, "Save & next")
    session.expire_all()
    assert session.get(Example, ex.id).turns[3]["content"].endswith("we send an engineer.")
    assert f"Saved #{ex.id} (version 2). This is the last example in the queue." in at.session_state["_flash"]
