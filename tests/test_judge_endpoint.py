"""The judge through a real OpenAI-compatible endpoint on this machine: `finetune-studio serve-model` of the
embedded SmolLM2 registered as a judge, checked, then a judge job on an eval set's outputs (pairwise in both
orders, rubric grades per criterion), canceled after its first verdicts and resumed without asking anything twice.
The small model often answers outside the format: those answers are stored, counted and never guessed."""
from __future__ import annotations

import pytest
from sqlmodel import select

from core.basemodel import ensure_embedded
from core.evaluate.judgeresults import judge_results
from core.evaluate.judges import add_judge, check_judge
from core.evaluate.judging import judging_jobs, launch_judging, parse_pairwise, parse_rating, resume_judging
from core.jobs.queue import cancel
from storage.models import JobStatus, JudgeVerdict
from tests.helpers import make_outputs, wait_for, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    return ensure_embedded(tmp_path_factory.mktemp("models"))


def _verdicts(session, judge_id):
    session.expire_all()
    return session.exec(select(JudgeVerdict).where(JudgeVerdict.judge_id == judge_id)).all()


def test_a_judge_job_through_serve_model_counts_unparseable_and_resumes(session, users, project, serve, smollm):
    eng = users["engineer"]
    es, systems = make_outputs(session, project, eng, n_prompts=1, runs=1)
    url = serve(smollm)
    judge = add_judge(session, users["admin"], "smollm", url, f"base:{smollm}", min_items=1)
    checked = check_judge(session, eng, judge.id)
    assert checked["judge"] == "smollm" and isinstance(checked["answer"], str)

    job = launch_judging(session, eng, es.id, judge.id, criteria=["accuracy", "tone"], max_tokens=16)
    total = 2 + 2 * 2  # pairwise: one prompt in both orders; rubric: 2 systems x 2 criteria
    # The machine is shared and the judge's prompt is long for a CPU: each answer may take many seconds.
    wait_until(lambda: len(_verdicts(session, judge.id)) >= 1, 900, "the judge's first verdict")
    cancel(session, eng, job.id)
    job = wait_for(session, job.id, timeout=120)  # a cancel does not wait for the answer being generated
    assert job.status == JobStatus.canceled.value, job.error
    kept = len(_verdicts(session, judge.id))
    assert 1 <= kept < total and job.result["total"] == total

    resumed = resume_judging(session, eng, job.id)
    resumed = wait_for(session, resumed.id, timeout=1200)
    assert resumed.status == JobStatus.succeeded.value, resumed.error
    assert (resumed.result["already_stored"], resumed.result["asked"]) == (kept, total - kept)
    rows = _verdicts(session, judge.id)
    assert len(rows) == total == len({(r.mode, r.criterion, r.output_a_id, r.output_b_id) for r in rows})
    pairwise = [r for r in rows if r.mode == "pairwise"]
    assert sorted((r.system_a, r.system_b) for r in pairwise) == sorted(
        [tuple(systems), tuple(reversed(systems))])  # both orders
    assert {r.criterion for r in rows if r.mode == "rubric"} == {"accuracy", "tone"}
    for r in rows:  # every stored verdict is what the parser reads in the raw answer: nothing guessed
        assert r.raw.strip()
        assert r.verdict == (parse_pairwise(r.raw) if r.mode == "pairwise" else None)
        assert r.score == (parse_rating(r.raw, 1, 5) if r.mode == "rubric" else None)

    res = judge_results(session, eng, es.id, judge.id, rounds=20)
    c = res["counts"]
    assert c["answers"] == total and c["pairwise_items"] == 1
    assert c["unparseable"] == sum(r.verdict is None and r.score is None for r in rows) == len(res["unparseable"])
    assert c["items_with_verdict"] == sum(
        all(r.verdict for r in pairwise if r.prompt_id == pid) for pid in {r.prompt_id for r in pairwise})
    assert [j.id for j in judging_jobs(session, eng, es.id)] == [resumed.id, job.id]
