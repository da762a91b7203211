"""Reviewing in core: an example's history (earlier rejection, who did what, the diff since the last review),
a reviewer's own fix, bulk approval of a filtered selection, and the queue's excerpt."""
from __future__ import annotations

import pytest
from sqlmodel import select

from core.curate import curation as cur
from core.curate.history import review_context
from core.errors import Conflict, InvalidInput, PermissionDenied
from storage.models import Example


def turns(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_resubmitted_example_shows_the_earlier_reason_its_steps_and_what_changed(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    ex = cur.create_example(session, ann, project, turns=turns("Why is my bill high?", "It is high."), submit=True)
    cur.review_example(session, rev, ex.id, "reject", "Too vague: say how to check the meter reading.")
    ex = cur.get_example(session, ex.id)
    cur.save_example(session, ann, ex.id, expected_version=ex.version, system="",
                     turns=turns("Why is my bill high?", "Compare your meter reading with the bill's."),
                     tags=["billing"], submit=True)
    ex = cur.get_example(session, ex.id)
    ctx = review_context(session, ex)
    assert ctx.last_rejection.reason == "Too vague: say how to check the meter reading."
    assert ctx.last_rejection.user_id == rev.id
    assert [(s.action, s.version, s.user_id) for s in ctx.steps] == [
        ("created", 1, ann.id), ("rejected", 2, rev.id), ("submitted", 3, ann.id)]
    assert ctx.last_review.version == 2
    assert "-[assistant] It is high." in ctx.diff and "+[assistant] Compare your meter reading with the bill's." \
        in ctx.diff and "+[tags] billing" in ctx.diff
    assert ex.reject_reason == ""  # the live row is clean; the reason lives on in the history


def test_never_reviewed_example_has_no_diff(session, project, users):
    ex = cur.create_example(session, users["annotator"], project, turns=turns("Hi?", "Hello there, friend."))
    ctx = review_context(session, ex)
    assert ctx.last_rejection is None and ctx.last_review is None and ctx.diff == []


def test_reviewer_fixes_a_typo_and_approves_in_one_recorded_step(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    ex = cur.create_example(session, ann, project, turns=turns("Can I pay by card?", "Yes, by debit or credti card."),
                            submit=True)
    before = ex.version
    fixed = cur.fix_and_approve(session, rev, ex.id, expected_version=before, system="",
                                turns=turns("Can I pay by card?", "Yes, by debit or credit card."))
    assert (fixed.status, fixed.version, fixed.reviewed_by) == ("approved", before + 1, rev.id)
    assert fixed.turns[1]["content"] == "Yes, by debit or credit card."
    last = review_context(session, fixed).steps[-1]
    assert (last.action, last.user_id, last.record["turns"][1]["content"]) == (
        "edited and approved", rev.id, "Yes, by debit or credit card.")
    with pytest.raises(InvalidInput, match="only submitted examples"):
        cur.fix_and_approve(session, rev, ex.id, expected_version=fixed.version, system="",
                            turns=turns("Can I pay by card?", "Yes."))


def test_a_review_with_the_reviewers_fix_approves_the_fix_or_refuses(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    ex = cur.create_example(session, ann, project, turns=turns("Can I pay by card?", "Yes, by credti card."),
                            submit=True, tags=["billing"])
    fix = dict(system="", turns=turns("Can I pay by card?", "Yes, by credit card."), input="", tags=["billing"],
               note="")
    with pytest.raises(InvalidInput, match="a rejection would drop your fix"):
        cur.review_example(session, rev, ex.id, "reject", "Too short.", expected_version=ex.version, fix=fix)
    done = cur.review_example(session, rev, ex.id, "approve", expected_version=ex.version, fix=fix)
    assert (done.status, done.turns[1]["content"]) == ("approved", "Yes, by credit card.")
    assert review_context(session, done).steps[-1].action == "edited and approved"
    # An untouched fix is a plain review: a rejection goes through, and nothing is recorded as edited.
    other = cur.create_example(session, ann, project, turns=turns("Opening hours?", "Nine to five."), submit=True)
    same = dict(system="", turns=turns("Opening hours?", "Nine to five."), input="", tags=[], note="")
    assert not cur.fix_changes(other, same)
    rejected = cur.review_example(session, rev, other.id, "reject", "Say which days.", fix=same)
    assert (rejected.status, review_context(session, rejected).steps[-1].action) == ("rejected", "rejected")


def test_fix_and_approve_needs_a_reviewer_and_a_fresh_copy(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    ex = cur.create_example(session, ann, project, turns=turns("Opening hours?", "Nine to five, weekdays."),
                            submit=True)
    with pytest.raises(PermissionDenied):
        cur.fix_and_approve(session, ann, ex.id, expected_version=ex.version, system="",
                            turns=turns("Opening hours?", "Always."))
    with pytest.raises(Conflict):
        cur.fix_and_approve(session, rev, ex.id, expected_version=ex.version + 5, system="",
                            turns=turns("Opening hours?", "Always."))
    assert cur.get_example(session, ex.id).status == "submitted"


def test_bulk_approve_takes_exactly_the_confirmed_filtered_selection(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    made = [cur.create_example(session, ann, project, turns=turns(f"Billing question {i}?", f"Billing answer {i} ok."),
                               tags=["billing"] if i < 3 else ["outage"], submit=i != 4) for i in range(5)]
    assert cur.count_submitted(session, project, tag="billing") == 3
    with pytest.raises(PermissionDenied):
        cur.approve_selection(session, ann, project, tag="billing", expected=3)
    with pytest.raises(InvalidInput, match="selection changed: 3 examples match now, not 2"):
        cur.approve_selection(session, rev, project, tag="billing", expected=2)
    assert cur.count_submitted(session, project, tag="billing") == 3  # nothing approved
    assert cur.approve_selection(session, rev, project, tag="billing", expected=3) == 3
    session.expire_all()
    status = {e.id: e.status for e in session.exec(select(Example))}
    assert [status[e.id] for e in made] == ["approved"] * 3 + ["submitted", "draft"]
    assert review_context(session, cur.get_example(session, made[0].id)).steps[-1].action == "approved"


def test_queue_excerpt_is_the_first_user_message_not_the_system_prompt(session, project, users):
    ex = cur.create_example(session, users["annotator"], project, system="You are a helpful utility assistant.",
                            turns=turns("My  smart meter\nshows   'E1' - what now?", "Restart it by ..."))
    assert cur.excerpt(ex) == "My smart meter shows 'E1' - what now?"
    assert cur.excerpt(ex, limit=12) == "My smart me…"
