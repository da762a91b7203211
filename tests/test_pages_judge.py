"""The judge on the pages: an admin registers a judge on Admin (the key's variable name, never a key), checks it
and sees the error of an endpoint that does not answer; Results shows the judge beside the reviewers, its prompts,
its agreement and disagreements, "not yet trusted" on every figure, and failure routing offers it marked so."""
from __future__ import annotations

from sqlmodel import select

from storage.models import Judge
from tests.fixtures_jobs import add_job, live_process
from tests.helpers import page, rendered_text


KEYS = {"Name": "judge_name", "Base URL": "judge_url", "Model": "judge_model",
        "API key environment variable": "judge_key_env"}


def _input(at, label):
    return at.text_input(key=KEYS[label])


def test_an_admin_registers_and_checks_a_judge(session, users, project):
    at = page("admin.py", users["admin"])
    at.run()
    _input(at, "Name").set_value("local judge")
    _input(at, "Base URL").set_value("http://127.0.0.1:9/v1")
    _input(at, "API key environment variable").set_value("sk-not a name")
    next(b for b in at.button if b.label == "Register judge").click()
    at.run()
    assert any("NAME of the environment variable" in e.value for e in at.error)
    assert session.exec(select(Judge)).first() is None  # refused: nothing saved
    _input(at, "Name").set_value("local judge")
    _input(at, "Base URL").set_value("http://127.0.0.1:9/v1")
    _input(at, "Model").set_value("base")
    _input(at, "API key environment variable").set_value("")
    next(b for b in at.button if b.label == "Register judge").click()
    at.run()
    assert not at.exception and not at.error
    assert "http://127.0.0.1:9/v1" in rendered_text(at)  # listed in the judges' table
    judge = session.exec(select(Judge)).one()
    assert (judge.base_url, judge.model, judge.api_key_env, judge.min_kappa, judge.min_items) == \
        ("http://127.0.0.1:9/v1", "base", "", 0.6, 30)
    next(b for b in at.button if b.label == "Check").click()
    at.run()
    assert any("did not answer" in e.value for e in at.error)


def test_results_show_the_judge_apart_and_not_yet_trusted(session, users, judged):
    at = page("results.py", users["engineer"])
    at.run(timeout=120)
    assert not at.exception
    text = rendered_text(at)
    assert "LLM judge (a separate rater)" in text and "not yet trusted" in text
    assert "Judge leaderboard (not yet trusted)" in text and "Agreement with the reviewers (not yet trusted)" in text
    assert "[[A]]" in text and "Rating: [[N]]" in text  # the prompts, from the repository's files
    assert "Cohen's kappa" in text and "Position bias" in text and "Disagreements to read" in text
    assert next(m for m in at.metric if m.label == "Unparseable").value == "2"
    by = next(s for s in at.selectbox if s.label == "Judged by")
    assert "judge local judge (not yet trusted)" in [by.format_func(o) for o in by.options] or \
        "judge local judge (not yet trusted)" in by.options


def test_judge_jobs_use_the_one_cancel_resume_widget(session, users, project, judged):
    # The judge section once drew its own buttons: Cancel stayed after a cancel was asked, and Resume was offered
    # again for a judge job that a live job already continues (a second click made a second continuation).
    from core.evaluate.judging import KIND, WORKER

    es = judged[0]
    with live_process() as proc:
        failed = add_job(session, project, users["engineer"], kind=KIND, status="failed", error="Endpoint down.",
                         eval_set_id=es.id, module=WORKER)
        going = add_job(session, project, users["engineer"], kind=KIND, pid=proc.pid, resumed_from=failed.id,
                        cancel_requested=True, eval_set_id=es.id, module=WORKER)
        at = page("results.py", users["engineer"])
        at.run(timeout=120)
        assert not at.exception, [e.value for e in at.exception]
        keys = [b.key for b in at.button]
        assert f"resume_judge{failed.id}" not in keys and f"cancel_judge{going.id}" not in keys, keys
        captions = [c.value for c in at.caption]
        assert any(f"Job {failed.id} is being resumed as job {going.id}." in c for c in captions), captions
        assert "Cancel requested." in captions
