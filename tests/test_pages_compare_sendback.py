"""Compare keeps a reviewer's scored items reachable, and "send back" makes a draft the annotators can use:
started from A, B, the reference or nothing, with the reviewer's whole comment, a traceable origin, and a
warning when the prompt is a frozen test-split example."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.evaluate import evalsets, review
from storage.models import EvalPrompt, Example, Output
from tests.helpers import fill_score_sheet, full_scores, make_outputs

ROOT = Path(__file__).resolve().parents[1]
COMMENT = "B gets the tariff right but:\n- it never says the number\n- the tone is curt\n\nPlease fix both."


def _page(user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _score_everything(session, reviewer, es_id: int) -> int:
    n = 0
    while (item := review.next_item(session, reviewer, es_id)) is not None:
        review.submit_score(session, reviewer, es_id, item.prompt_id, item.pair, scores=full_scores(3, 4),
                            preference="B")
        n += 1
    return n


def test_scored_items_stay_editable_when_everything_is_scored(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    rev = users["reviewer"]
    n = _score_everything(session, rev, es.id)
    at = _page(rev).run()
    assert any("scored every item" in s.value for s in at.success)
    assert f"Your scored items ({n})" in [e.label for e in at.expander]
    at.button(key="cmp_revisit_open").click().run()
    assert any("You scored this item before" in i.value for i in at.info)
    fill_score_sheet(at, full_scores(3, 4), "tie")
    at.button(key="cmp_submit").click().run()
    assert not at.exception and not at.error
    assert sorted(s.preference for s in review.scores_of(session, es.id)) == ["B"] * (n - 1) + ["tie"]


def test_send_back_offers_four_starts_and_keeps_the_comment_whole(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    rev = users["reviewer"]
    at = _page(rev).run()
    start = next(r for r in at.radio if r.label == "Start the draft from")
    assert start.options == ["Answer A", "Answer B", "The reference answer", "An empty answer"]
    assert start.value == "reference"  # not answer A, which is often the base model's loop
    item = review.next_item(session, rev, es.id)
    at.text_area[0].input(COMMENT).run()
    start = next(r for r in at.radio if r.label == "Start the draft from")
    start.set_value("B").run()
    at.button(key="cmp_send_back").click().run()
    assert not at.error, [e.value for e in at.error]
    ex = session.exec(select(Example).where(Example.source == "review_feedback")).one()
    assert ex.status == "draft"
    assert ex.turns[-1] == {"role": "assistant", "content": item.text_b}  # B as this reviewer saw it
    assert ex.note == COMMENT  # whole, line breaks and all
    assert ex.origin == {"kind": "blind_review", "eval_set_id": es.id, "eval_set": es.name,
                         "prompt_id": item.prompt_id, "position": session.get(EvalPrompt, item.prompt_id).position,
                         "prompt_number": session.get(EvalPrompt, item.prompt_id).position + 1,  # as people count
                         "reviewer_id": rev.id, "reviewer": rev.username, "comment": COMMENT, "start": "B",
                         "test_split_example_id": None}


def test_send_back_with_an_empty_answer_and_without_a_reference(session, project, users):
    es, _ = make_outputs(session, project, users["engineer"], n_prompts=1, runs=1, references=False)
    rev = users["reviewer"]
    options = review.send_back_options(session, rev, es.id, evalsets.eval_prompts(session, es.id)[0].id)
    assert options["starts"] == ["A", "B", "empty"] and options["default"] == "empty"
    at = _page(rev).run()
    at.button(key="cmp_send_back").click().run()
    ex = session.exec(select(Example).where(Example.source == "review_feedback")).one()
    assert ex.turns[-1] == {"role": "assistant", "content": ""} and ex.status == "draft"
    assert ex.origin["start"] == "empty"
    from core.curate.curation import create_example
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="cannot be submitted"):
        create_example(session, rev, project, turns=ex.turns, answer_to_write=True, submit=True)


def test_send_back_warns_when_the_prompt_is_a_frozen_test_example(session, project, users):
    from core.curate.datasets import freeze_version

    for i in range(10):
        session.add(Example(project_id=project.id, status="approved",
                            turns=[{"role": "user", "content": f"question {i}"},
                                   {"role": "assistant", "content": f"answer {i}"}]))
    session.commit()
    version = freeze_version(session, users["admin"], project, "v1",
                             fractions={"train": 0.5, "validation": 0.0, "test": 0.5})
    es = evalsets.create_eval_set_from_version(session, users["engineer"], project.id, version.id, "held out")
    for p in evalsets.eval_prompts(session, es.id):
        for system in ("base", "run:1"):
            session.add(Output(prompt_id=p.id, system=system, job_id=None, text=f"{system} says hi", decoding={}))
    session.commit()
    rev = users["reviewer"]
    at = _page(rev).run()
    warning = next(w.value for w in at.warning)
    assert "test split of dataset version" in warning and "training data" in warning
    at.button(key="cmp_send_back").click().run()
    ex = session.exec(select(Example).where(Example.source == "review_feedback")).one()
    prompt_example = ex.origin["test_split_example_id"]
    assert prompt_example is not None and f"example #{prompt_example}" in warning
