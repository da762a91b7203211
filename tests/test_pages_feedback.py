"""Pages of the feedback loop: Results sends a run's failures to annotation and shows where they are now;
Datasets launches a draft-answers job and shows how much experts changed the drafts; Annotate marks a draft
written by a model."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from storage.models import Example
from tests.helpers import make_outputs
from tests.test_failures import _score

ROOT = Path(__file__).resolve().parents[1]


def _page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_results_sends_failures_to_an_annotator_and_counts_them(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1, references=False)
    _score(session, es, reviewers[:2])
    at = _page("results.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Sent to annotation" not in _metrics(at)
    at.radio(key="fail_rule").set_value("low_score").run()
    at.selectbox(key="fail_criterion").set_value("accuracy")
    at.number_input(key="fail_threshold").set_value(2.0)
    at.selectbox(key="fail_assignee").set_value(users["annotator"].id)
    next(b for b in at.button if b.label == "Send failures to annotation").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.success] == ["2 of 2 failing prompts sent to annotation as drafts; 0 already sent "
                                             "before and 0 already in the data were skipped."]
    metrics = _metrics(at)
    assert (metrics["Sent to annotation"], metrics["Draft"], metrics["Approved"]) == ("2", "2", "0")
    sent = session.query(Example).filter(Example.source == "eval_failure").all()
    assert {e.assigned_to for e in sent} == {users["annotator"].id}
    next(b for b in at.button if b.label == "Send failures to annotation").click().run()
    assert at.success[0].value.startswith("0 of 2 failing prompts sent") and "2 already sent" in at.success[0].value
    assert _metrics(at)["Sent to annotation"] == "2"


def test_results_refuses_a_bad_rule_with_a_message(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    _score(session, es, reviewers[:2])
    at = _page("results.py", users["engineer"]).run()
    at.radio(key="fail_rule").set_value("low_score").run()
    at.number_input(key="fail_threshold").set_value(9.0)
    next(b for b in at.button if b.label == "Send failures to annotation").click().run()
    assert [e.value for e in at.error] == ["The accuracy threshold must be between 1 and 5."]
