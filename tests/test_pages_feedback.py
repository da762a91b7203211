"""Pages of the feedback loop: Results sends a run's failures to annotation and shows where they are now;
Datasets launches a draft-answers job and shows how much experts changed the drafts; Annotate marks a draft
written by a model."""
from __future__ import annotations

from pathlib import Path

from sqlmodel import select
from streamlit.testing.v1 import AppTest

from storage.models import Example
from tests.helpers import make_outputs, score_failures

ROOT = Path(__file__).resolve().parents[1]


def _page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_results_sends_failures_to_an_annotator_and_counts_them(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1, references=False)
    score_failures(session, es, reviewers[:2])
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
    sent = session.exec(select(Example).where(Example.source == "eval_failure")).all()
    assert {e.assigned_to for e in sent} == {users["annotator"].id}
    next(b for b in at.button if b.label == "Send failures to annotation").click().run()
    assert at.success[0].value.startswith("0 of 2 failing prompts sent") and "2 already sent" in at.success[0].value
    assert _metrics(at)["Sent to annotation"] == "2"


def test_results_refuses_a_bad_rule_with_a_message(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    score_failures(session, es, reviewers[:2])
    at = _page("results.py", users["engineer"]).run()
    at.radio(key="fail_rule").set_value("low_score").run()
    at.number_input(key="fail_threshold").set_value(9.0)
    next(b for b in at.button if b.label == "Send failures to annotation").click().run()
    assert [e.value for e in at.error] == ["The accuracy threshold must be between 1 and 5."]


def _drafted_example(session, project, user, text="Read the dial [from](http://x) left."):
    """An imported prompt-only example after a draft-answers job by run 'mine*' wrote ``text`` into it."""
    ex = Example(project_id=project.id, status="draft", created_by=user.id, updated_by=user.id,
                 turns=[{"role": "user", "content": "How do I read my meter?"}, {"role": "assistant", "content": text}],
                 origin={"needs_answer": True, "drafted": {"system": "run:7", "label": "run 7: mine*", "job_id": 9,
                                                           "text": text}})
    session.add(ex)
    session.commit()
    session.refresh(ex)
    return ex


def test_annotate_marks_a_model_draft_and_the_submitted_edit_reaches_the_datasets_stats(session, project, users):
    ex = _drafted_example(session, project, users["engineer"])
    at = _page("annotate.py", users["annotator"])
    at.session_state["project_id"] = project.id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [i.value for i in at.info] == [r"Drafted by run 7\: mine\* — edit before submitting."]
    assert at.radio(key=f"q_pick_{ex.id}").options[0].endswith("draft · model draft · How do I read my meter?")
    next(t for t in at.text_area if t.label == "Response").set_value("Read the dial from left to right.")
    next(b for b in at.button if b.label == "Submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    session.expire_all()
    assert (session.get(Example, ex.id).status, session.get(Example, ex.id).updated_by) == ("submitted",
                                                                                            users["annotator"].id)

    ds = _page("dataset_versions.py", users["annotator"])
    ds.session_state["project_id"] = project.id
    ds.run()
    assert not ds.exception, [e.value for e in ds.exception]
    frame = next(d.value for d in ds.dataframe if "mean edit distance" in d.value.columns)
    row = frame.iloc[0]
    assert (row["drafted by"], row["drafts submitted by experts"], row["kept unchanged"]) == ("run 7: mine*", 1, 0)
    assert 0 < row["mean edit distance"] < 0.5
    assert "Draft answers" not in [b.label for b in ds.button]  # annotators do not launch jobs


def test_datasets_launches_a_draft_answers_job_for_the_examples_that_need_one(session, project, users):
    from core.jobs.queue import get_job
    from tests.fixtures_jobs import add_job, live_process

    eng = users["engineer"]
    for q in ("How do I read my meter?", "Can I pay by card?"):
        session.add(Example(project_id=project.id, status="draft", origin={"needs_answer": True},
                            turns=[{"role": "user", "content": q}, {"role": "assistant", "content": ""}]))
    session.commit()
    with live_process() as busy:  # the one device slot is taken: the new job waits in the queue, nothing loads
        add_job(session, project, eng, kind="generate", pid=busy.pid)
        at = _page("dataset_versions.py", eng)
        at.session_state["project_id"] = project.id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert _metrics(at)["Examples that need an answer"] == "2"
        at.number_input(key="draft_max_new").set_value(32)
        next(b for b in at.button if b.label == "Draft answers").click().run()
        assert not at.exception, [e.value for e in at.exception]
        [message] = [m.value for m in at.success]
        job_id = int(message.split()[2])
        assert message == f"Draft-answers job {job_id} queued for 2 examples."
        job = get_job(session, job_id)
        assert (job.kind, job.config["system"], job.config["decoding"]["max_new_tokens"]) == ("draft", "base", 32)
        jobs = next(d.value for d in at.dataframe if "drafted" in d.value.columns)
        assert jobs.iloc[0]["job"] == job_id and jobs.iloc[0]["status"] == "queued"
        next(b for b in at.button if b.label == f"Cancel draft-answers job {job_id}").click().run()
        assert not at.exception, [e.value for e in at.exception]
        session.expire_all()
        assert get_job(session, job_id).status == "canceled"
        next(b for b in at.button if b.label == f"Resume draft-answers job {job_id}").click().run()
        assert not at.exception, [e.value for e in at.exception]
        again = next(d.value for d in at.dataframe if "drafted" in d.value.columns).iloc[0]
        assert again["job"] != job_id and again["status"] == "queued"
        assert get_job(session, int(again["job"])).resumed_from == job_id
