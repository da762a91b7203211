"""Pages say what is happening to a job, from the database, at once (issue 18): the Train panel says a run is
starting or that a cancel was requested, Resume is offered only when no continuation of the run is live, the Runs
table and the live panel show one labelled train loss and never "None", the Playground offers "Stop serving" in
the run that started the endpoint and names the jobs ahead of it, and a reviewer hears when new answers are ready."""
from __future__ import annotations

import math

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.errors import InvalidInput
from storage.models import Job
from tests.fixtures_jobs import add_job, finish, live_process, stubborn_process
from tests.helpers import page, status_line

pytestmark = pytest.mark.timeout(300)


def test_a_run_that_reported_no_step_yet_says_it_is_starting(session, users, project):
    with live_process() as proc:
        add_job(session, project, users["engineer"], name="fresh", pid=proc.pid)
        at = page("train.py", users["engineer"]).run()
        assert not at.exception, [e.value for e in at.exception]
        assert "starting" in status_line(at)


def test_cancel_says_cancel_requested_in_the_same_click(session, users, project):
    with stubborn_process() as proc:
        job = add_job(session, project, users["engineer"], name="long-step", pid=proc.pid,
                      metrics=[{"step": 1, "total_steps": 50, "loss": 2.5}])
        at = page("train.py", users["engineer"]).run()
        assert status_line(at) == "**Status:** running"
        at.button(key=f"cancel{job.id}").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert "Cancel requested — stopping at the next step" in status_line(at)
        assert f"cancel{job.id}" not in [b.key for b in at.button]  # asked once; nothing more to click
        at.run()  # and it stays said on the next poll, from the database
        assert "Cancel requested — stopping at the next step" in status_line(at)


@pytest.fixture
def busy(session, project, users):
    """A running job that holds the machine's one slot, so anything queued now waits."""
    with live_process() as proc:
        yield add_job(session, project, users["engineer"], name="busy", pid=proc.pid,
                      metrics=[{"step": 1, "total_steps": 9, "loss": 2.0}])


@pytest.mark.slow
def test_resume_is_not_offered_while_the_run_is_being_resumed_even_through_a_chain(session, users, project, busy):
    from core.train.runs import resume_run

    first = add_job(session, project, users["engineer"], name="first", status="canceled", error="Canceled.")
    second = add_job(session, project, users["engineer"], name="first", status="failed", resumed_from=first.id,
                     error="Out of memory.")
    third = add_job(session, project, users["engineer"], name="first", status="queued", resumed_from=second.id)
    at = page("train.py", users["engineer"]).run()
    for old in (first, second):
        at.selectbox(key="watch_select").set_value(old.id).run()
        assert not at.exception, [e.value for e in at.exception]
        assert f"resume{old.id}" not in [b.key for b in at.button]
        assert any(f"being resumed as run {third.id}" in c.value for c in at.caption), [c.value for c in at.caption]
    for old in (first, second):
        with pytest.raises(InvalidInput, match=f"already being resumed as run {third.id}"):
            resume_run(session, users["engineer"], old.id)
    assert len(session.exec(select(Job).where(Job.resumed_from.in_([first.id, second.id]))).all()) == 2


def _cells(frame) -> list:
    return [v for col in frame.columns for v in frame[col]]


def test_runs_table_and_live_panel_show_one_labelled_train_loss_and_never_none(session, users, project):
    done_rows = [{"step": s, "total_steps": 3, "loss": loss} for s, loss in ((1, 2.9), (2, 2.7), (3, 2.676))]
    done = add_job(session, project, users["engineer"], name="done", status="succeeded", config={"method": "lora"},
                   metrics=done_rows, result={"metrics": {"train_loss": 2.58, "global_step": 3}})
    with live_process() as proc:
        going = add_job(session, project, users["engineer"], name="going", pid=proc.pid, config={"method": "lora"},
                        metrics=[{"step": 1, "total_steps": 9, "loss": 3.1}, {"step": 2, "total_steps": 9,
                                                                             "loss": 3.05}])
        stopping = add_job(session, project, users["engineer"], name="stopping", pid=proc.pid, cancel_requested=True,
                           metrics=[{"step": 1, "total_steps": 9, "loss": 3.2}])
        fresh = add_job(session, project, users["engineer"], name="fresh", pid=proc.pid)
        at = page("runs.py", users["engineer"]).run()
        assert not at.exception, [e.value for e in at.exception]
        frame = at.dataframe[0].value
        cells = _cells(frame)
        assert not [v for v in cells if v is None or (isinstance(v, float) and math.isnan(v)) or v == "None"], frame
        by_id = {int(r["id"]): r for _, r in frame.iterrows()}
        loss_column = next(c for c in frame.columns if c.startswith("train_loss"))
        assert by_id[going.id][loss_column] == "3.050"  # the latest step of the running run
        assert by_id[done.id][loss_column] == "2.676"
        assert by_id[going.id]["eval_loss_last"] == "—"
        assert [by_id[j.id]["status"] for j in (going, stopping, fresh, done)] == [
            "running", "stopping", "starting", "succeeded"]  # the Runs table says what the panel says
        import json

        labels = {k: spec.get("label") for k, spec in json.loads(at.dataframe[0].proto.columns).items()}
        assert "last step" in labels[loss_column]
        train = page("train.py", users["engineer"]).run()
        train.selectbox(key="watch_select").set_value(done.id).run()
        metric = next(m for m in train.metric if m.label.lower().startswith("train loss"))
        assert "last step" in metric.label and metric.value == "2.676"


def test_playground_offers_stop_serving_at_once_and_names_the_jobs_ahead(session, users, project, busy):
    ahead = add_job(session, project, users["engineer"], kind="generate", name="gen", status="queued")
    at = page("playground.py", users["engineer"]).run()
    assert "Stop serving" not in [b.label for b in at.button]
    at.chat_input[0].set_value("Hello?").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Stop serving" in [b.label for b in at.button]  # in the run that queued the endpoint, not a later one
    waiting = " ".join(i.value for i in at.info)
    assert f"run {busy.id}" in waiting and f"generation job {ahead.id}" in waiting, waiting
    at.button(key="pg_stop_serving").click().run()
    serving = session.exec(select(Job).where(Job.kind == "serve")).one()
    session.refresh(serving)
    assert serving.status == "canceled"


def _notice_script():
    import streamlit as st

    from ui.notices import show_job_notices
    from ui.frame import db
    from storage.models import User

    with db() as s:
        user = s.get(User, st.session_state["uid"])
    show_job_notices(user, st.session_state["pid"])


def _notices(user, project) -> AppTest:
    at = AppTest.from_function(_notice_script, default_timeout=30)
    at.session_state["uid"], at.session_state["pid"] = user.id, project.id
    return at


def test_a_reviewer_hears_when_answers_to_score_are_ready_without_system_names(session, users, project):
    from core.evaluate.evalsets import create_eval_set_from_file

    es = create_eval_set_from_file(session, users["engineer"], project.id, "billing-questions",
                                   '{"prompt": "Is my bill late?"}\n', "p.jsonl")
    with live_process() as proc:
        job = add_job(session, project, users["engineer"], kind="generate", name="gen secret-lora-7", pid=proc.pid,
                      eval_set_id=es.id)
        reviewer, annotator = _notices(users["reviewer"], project).run(), _notices(users["annotator"], project).run()
        finish(session, job)
        reviewer.run()
        annotator.run()
    toasts = [t.value for t in reviewer.toast]
    assert len(toasts) == 1, toasts
    from ui.frame import md_literal

    assert md_literal("billing-questions") in toasts[0] and "Compare" in toasts[0]
    assert "secret" not in toasts[0] and job.name not in toasts[0]
    assert not [t.value for t in annotator.toast]
