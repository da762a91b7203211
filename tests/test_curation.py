"""Curation: stale saves, statuses, review, queue pagination at 100,000 rows, hints, agreement."""
from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlmodel import select

from core.curate import curation as cur
from core.errors import Conflict, InvalidInput, PermissionDenied
from core.projects import update_project
from storage.models import Example

PAIR = [{"role": "user", "content": "How do I read my meter?"},
        {"role": "assistant", "content": "Note the digits from left to right, ignoring red ones."}]


def new(session, user, project, q="How do I read my meter?", a=PAIR[1]["content"], **kw):
    return cur.create_example(session, user, project, turns=[{"role": "user", "content": q},
                                                            {"role": "assistant", "content": a}], **kw)


def test_stale_save_is_refused_with_both_versions(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    ex = new(session, ann, project, tags=["meter"])
    v = ex.version
    cur.save_example(session, rev, ex.id, expected_version=v, system="", turns=PAIR, note="reviewer fixed it")
    mine = [PAIR[0], {"role": "assistant", "content": "My own better answer."}]
    with pytest.raises(Conflict) as caught:
        cur.save_example(session, ann, ex.id, expected_version=v, system="", turns=mine, tags=["meter"])
    err = caught.value
    assert err.current["note"] == "reviewer fixed it" and err.current["version"] == v + 1
    assert err.attempted["turns"][1]["content"] == "My own better answer."
    fresh = cur.get_example(session, ex.id)
    assert fresh.turns == PAIR and fresh.note == "reviewer fixed it"  # nothing of the stale save written
    saved = cur.save_example(session, ann, ex.id, expected_version=fresh.version, system="", turns=mine)
    assert saved.version == v + 2 and saved.turns[1]["content"] == "My own better answer."


def test_status_flow_and_reject_reason_returns_to_annotator(session, project, users):
    ann, rev = users["annotator"], users["reviewer"]
    ex = new(session, ann, project)
    assert ex.status == "draft"
    with pytest.raises(InvalidInput, match="only submitted"):
        cur.review_example(session, rev, ex.id, "approve")
    ex = cur.submit_example(session, ann, ex.id, ex.version)
    with pytest.raises(PermissionDenied):
        cur.review_example(session, ann, ex.id, "approve")
    with pytest.raises(InvalidInput, match="why"):
        cur.review_example(session, rev, ex.id, "reject", "  ")
    ex = cur.review_example(session, rev, ex.id, "reject", "Mention the emergency number.")
    assert (ex.status, ex.reject_reason, ex.reviewed_by) == ("rejected", "Mention the emergency number.", rev.id)
    queued = cur.next_for(session, project, ann)
    assert queued.id == ex.id and queued.reject_reason == "Mention the emergency number."
    ex = cur.save_example(session, ann, ex.id, expected_version=ex.version, system="", turns=PAIR, submit=True)
    assert (ex.status, ex.reject_reason) == ("submitted", "")
    ex = cur.review_example(session, rev, ex.id, "approve")
    assert ex.status == "approved"
    edited = [PAIR[0], {"role": "assistant", "content": "Changed after approval."}]
    ex = cur.save_example(session, ann, ex.id, expected_version=ex.version, system="", turns=edited)
    assert ex.status == "draft"  # changed text needs another review


def test_roles_and_turn_checks(session, project, users):
    with pytest.raises(InvalidInput, match="alternate"):
        cur.create_example(session, users["annotator"], project,
                           turns=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(InvalidInput, match="empty assistant"):
        new(session, users["annotator"], project, a="   ")
    with pytest.raises(InvalidInput, match="unknown|alternate"):
        cur.create_example(session, users["annotator"], project,
                           turns=[{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}])
    first = new(session, users["annotator"], project)
    with pytest.raises(InvalidInput, match=f"#{first.id} already"):
        new(session, users["annotator"], project, q="  how DO i read my meter? ")


def test_multi_turn_and_input_are_kept(session, project, users):
    turns = PAIR + [{"role": "user", "content": "And the red ones?"},
                    {"role": "assistant", "content": "Ignore digits after the decimal point."}]
    ex = cur.create_example(session, users["annotator"], project, system="Be brief.", turns=turns,
                            input="Meter type: dial", tags=["meter", " ", "meter"], note="n")
    assert cur.record_of(ex) == {"system": "Be brief.", "turns": turns, "input": "Meter type: dial",
                                 "tags": ["meter"], "note": "n"}


def test_created_example_flags_near_duplicate(session, project, users):
    # One word changed in a long answer: word 3-gram Jaccard ~0.9, well above the 0.8 threshold.
    text = ("Open the app, choose readings, type the digits from left to right and press save; you will get a "
            "confirmation email within a few minutes of sending it. If the reading looks far higher than usual, "
            "check that you read the right register, that the meter serial number matches the one on your bill, "
            "and that you did not include the red digits after the decimal point before you contact us again.")
    first = new(session, users["annotator"], project, a=text)
    second = new(session, users["annotator"], project, a=text.replace("a few", "five"))
    assert second.near_duplicate_of == first.id
    tokens, hints = cur.example_hints(session, project, second, cur.record_of(second))
    assert any("Near duplicate of example #%d" % first.id in h.text for h in hints)


@pytest.mark.slow
def test_queue_keyset_pagination_at_100k(session, project, users):
    rows = [{"project_id": project.id, "system": "", "turns": PAIR, "input": "", "tags": ["t%d" % (i % 7)],
             "note": "", "status": ("draft", "submitted", "approved")[i % 3], "reject_reason": "",
             "content_hash": f"{i:064x}", "search_text": f"row {i} meter", "token_count": 10, "source": "bench",
             "created_by": users["annotator"].id, "version": 1, "created_at": cur.utcnow(),
             "updated_at": cur.utcnow()} for i in range(100_000)]
    for start in range(0, len(rows), 20_000):
        session.execute(insert(Example.__table__), rows[start:start + 20_000])
    session.commit()
    ids = session.exec(select(Example.id).order_by(Example.id)).all()
    draft_ids = [i for n, i in enumerate(ids) if n % 3 == 0]
    page1 = cur.queue_page(session, project, status="draft", limit=50)
    assert [e.id for e in page1] == draft_ids[:50]
    deep = cur.queue_page(session, project, status="draft", after_id=draft_ids[30_000], limit=50)
    assert [e.id for e in deep] == draft_ids[30_001:30_051]
    back = cur.queue_page(session, project, status="draft", before_id=draft_ids[30_001], limit=50)
    assert [e.id for e in back] == draft_ids[29_951:30_001]
    tagged = cur.queue_page(session, project, tag="t3", status="approved", limit=5)
    assert all("t3" in e.tags and e.status == "approved" for e in tagged) and len(tagged) == 5
    found = cur.queue_page(session, project, search="ROW 99999 ")
    assert [e.search_text for e in found] == ["row 99999 meter"]
    # The page query is answered from the (project_id, status, id) index, not a table scan.
    from sqlalchemy import text
    compiled = cur.queue_query(project, status="draft", after_id=draft_ids[30_000]).compile(
        compile_kwargs={"literal_binds": True})
    plan = " ".join(str(r[-1]) for r in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all())
    assert "ix_example_project_status_id" in plan


def test_hints_with_an_offline_tokenizer(session, project, users):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate("how do i read my meter ?".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    count = cur.token_counter(tok)
    assert count("how do i read my meter?") == 7
    update_project(session, users["admin"], project, max_length=16)
    record = {"system": "", "input": "", "turns": [{"role": "user", "content": "how do i read my meter? " * 3},
                                                   {"role": "assistant", "content": "ok"}]}
    tokens, hints = cur.quality_hints(record, project.max_length, count)
    assert tokens == 22
    texts = " | ".join(h.text for h in hints)
    assert "longer than the project's max length of 16" in texts and "very short" in texts
    record["turns"][1]["content"] = ""
    assert any(h.text == "A response is empty." for h in cur.quality_hints(record, 1000, count)[1])


def test_agreement_with_krippendorff(session, project, users):
    update_project(session, users["admin"], project, annotators_per_example=2)
    a, b = users["annotator"], users["reviewer"]
    exs = [new(session, a, project, q=f"Question {i}?", a=f"Answer number {i} is here.", submit=True)
           for i in range(4)]
    assert cur.agreement(session, project)["alpha"] is None
    for ex, (ra, rb) in zip(exs, [(1, 1), (2, 2), (4, 4), (5, 5)]):
        cur.rate_example(session, a, ex.id, ra)
        cur.rate_example(session, b, ex.id, rb)
    assert cur.agreement(session, project) == {"alpha": 1.0, "n_items": 4, "n_annotators": 2, "n_ratings": 8}
    cur.rate_example(session, b, exs[0].id, 5)
    cur.rate_example(session, b, exs[3].id, 1)
    assert cur.agreement(session, project)["alpha"] < 0
    # In multi-annotator mode a submitted example still needing ratings is in the queue of who has not rated.
    extra = new(session, a, project, q="One more question?", a="One more answer to rate.", submit=True)
    cur.rate_example(session, a, extra.id, 4)
    assert cur.next_for(session, project, users["engineer"]).id == extra.id
    assert cur.next_for(session, project, a) is None
