"""Evaluation pages under AppTest: the blind Compare page never reveals a system; Generate and Results work."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import fill_score_sheet, full_scores, make_outputs, page, rendered_text, score_all

ROOT = Path(__file__).resolve().parents[1]
DENIED = "Your role cannot use this page."


@pytest.fixture
def scored_setup(session, project, users):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=2)
    return es, systems


def _secrets(session, systems) -> list[str]:
    from storage.models import Job

    out = []
    for s in systems:
        if s.startswith("run:"):
            job = session.get(Job, int(s.split(":")[1]))
            out += [s, f"run {job.id}", f"Run {job.id}", job.name]
    return out


def test_compare_page_is_blind(session, project, users, scored_setup):
    es, systems = scored_setup
    at = page("compare.py", users["reviewer"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    secrets = _secrets(session, systems)
    for _ in range(3):  # through a few items, including after submitting
        text = rendered_text(at)
        assert "Answer A" in text and "Answer B" in text
        for secret in secrets:
            assert secret not in text, secret
        assert not re.search(r"\bbase\b", text, re.IGNORECASE)
        assert "SmolLM" not in text
        fill_score_sheet(at, full_scores(4, 4), "A")
        at.button(key="cmp_submit").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]


def test_compare_page_submit_edit_and_send_back(session, project, users, scored_setup):
    from sqlmodel import select

    from storage.models import Example, Score

    es, _ = scored_setup
    rev = users["reviewer"]
    at = page("compare.py", rev)
    at.run()
    # The digits, arrows and preference keys act in the browser's score sheet (tests/e2e/test_compare_browser.py);
    # submit and skip are the page's buttons.
    buttons = {b.key: b for b in at.button}
    assert buttons["cmp_submit"].proto.shortcut and buttons["cmp_skip"].proto.shortcut

    # Submitting without all scores is refused with a message, nothing saved.
    fill_score_sheet(at, {"accuracy": {"A": 3}}, None)
    at.button(key="cmp_submit").click().run()
    assert at.error and "Give" in at.error[0].value
    assert session.exec(select(Score)).all() == []

    fill_score_sheet(at, full_scores(2, 5), "B")
    at.text_area[0].input("B explains the steps").run()
    at.button(key="cmp_send_back").click().run()
    assert any("Sent back" in s.value for s in at.success)
    ex = session.exec(select(Example).where(Example.source == "review_feedback")).one()
    assert "B explains the steps" in ex.note
    at.button(key="cmp_submit").click().run()
    session.expire_all()
    (row,) = session.exec(select(Score)).all()
    assert row.preference == "B" and row.scores["tone"] == {"A": 2, "B": 5}

    # Reopen it from "Your scored items" and change the preference: the same row is edited.
    at.button(key="cmp_revisit_open").click().run()
    assert any("You scored this item before" in i.value for i in at.info)
    fill_score_sheet(at, full_scores(2, 5), "tie")
    at.button(key="cmp_submit").click().run()
    session.expire_all()
    rows = session.exec(select(Score)).all()
    assert len(rows) == 1 and rows[0].preference == "tie"


def test_compare_refuses_annotators(users, scored_setup):
    at = page("compare.py", users["annotator"])
    at.run()
    assert [e.value for e in at.error] == [DENIED]
    assert not at.button


def test_generate_page_creates_an_eval_set_and_checks_the_launch(session, project, users, scored_setup):
    from core.curate.datasets import freeze_version
    from core.evaluate.evalsets import list_eval_sets
    from storage.models import Example

    for i in range(20):
        session.add(Example(project_id=project.id, status="approved",
                            turns=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]))
    session.commit()
    freeze_version(session, users["admin"], project, "v1", fractions={"train": 0.5, "validation": 0.2, "test": 0.3})

    at = page("generate.py", users["engineer"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "secret-lora-0" in rendered_text(at)  # engineers choose runs by name here
    next(t for t in at.text_input if t.label == "Eval set name").input("held-out test")
    next(b for b in at.button if b.label == "Create eval set").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "held-out test" in [r["name"] for r in list_eval_sets(session, users["engineer"], project.id)]

    # Launch with runs whose adapters are missing, then with no system chosen: clear messages, no job.
    next(b for b in at.button if b.label == "Start generation").click().run()
    assert any("has no saved adapter or model" in e.value for e in at.error)
    at.multiselect[0].set_value([])
    next(b for b in at.button if b.label == "Start generation").click().run()
    assert any("at least one system" in e.value for e in at.error)
    from sqlmodel import select

    from storage.models import Job

    assert [j.name for j in session.exec(select(Job).where(Job.kind == "generate"))] == ["gen"]  # make_outputs' own


def test_generate_page_refuses_reviewers(users, scored_setup):
    at = page("generate.py", users["reviewer"])
    at.run()
    assert [e.value for e in at.error] == [DENIED]


def test_results_page_reveals_identities_and_exports(session, project, users, reviewers, scored_setup):

    es, systems = scored_setup
    score_all(session, es, reviewers[:2])
    at = page("results.py", users["engineer"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = rendered_text(at)
    assert "secret-lora-0" in text and "Leaderboard" in text and "Krippendorff" in text
    next(b for b in at.button if b.label == "Export DPO pairs").click().run()
    assert any("pairs written" in s.value for s in at.success)
    at = page("results.py", users["reviewer"])
    at.run()
    assert [e.value for e in at.error] == [DENIED]


def test_compare_page_shows_answers_as_text_never_markdown(session, project, users, scored_setup):
    """A model's answer with a markdown image or HTML is shown verbatim: nothing is rendered or fetched."""
    from sqlmodel import select

    from storage.models import Output

    evil = "Sure! ![pixel](http://tracker.invalid/p.png) <img src=x onerror=alert(1)> **bold**"
    for out in session.exec(select(Output)).all():
        out.text = evil
        session.add(out)
    session.commit()
    at = page("compare.py", users["reviewer"])
    at.run()
    assert not at.exception
    assert [t.value for t in at.text].count(evil) == 2  # answer A and answer B, as plain text
    assert not any("tracker.invalid" in m.value for m in at.markdown)
