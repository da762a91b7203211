"""A judge and an eval set it has judged, shared by the judge's core and page tests."""
from __future__ import annotations

import pytest

from core.evaluate.evalsets import latest_outputs
from core.evaluate.judges import add_judge
from storage.models import Judge, JudgeVerdict
from tests.helpers import make_outputs, score_all


def add_test_judge(session, users, **kw) -> Judge:
    return add_judge(session, users["admin"], "local judge", "http://127.0.0.1:9/v1", "judge-model", "JUDGE_KEY_T",
                     **kw)


def _verdict(session, judge, es, outputs, prompt_id, a, b="", *, verdict=None, score=None, criterion=""):
    session.add(JudgeVerdict(judge_id=judge.id, eval_set_id=es.id, prompt_id=prompt_id,
                             mode="rubric" if not b else "pairwise", criterion=criterion, system_a=a, system_b=b,
                             output_a_id=outputs[(prompt_id, a)].id, output_b_id=outputs[(prompt_id, b)].id if b else 0,
                             raw=f"answer {verdict or score}", verdict=verdict, score=score))


@pytest.fixture
def judged(session, project, users, reviewers):
    """Six prompts, base against a run, scored by three reviewers, and a judge's verdicts on them: run wins on
    prompts 0-3 in both orders, a flip on prompt 4 (A both times), an unparseable answer on prompt 5; accuracy
    grades on every answer, one unparseable."""
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=6, runs=1, k=3)
    base, run = systems
    score_all(session, es, reviewers, prefer_run=False, vary=lambda r, p: (p + r) % 3 - 1)
    judge = add_test_judge(session, users, min_items=4)
    outputs = latest_outputs(session, es.id)
    prompt_ids = sorted({p for p, _ in outputs})
    for i, pid in enumerate(prompt_ids):
        if i < 4:
            _verdict(session, judge, es, outputs, pid, base, run, verdict="B")
            _verdict(session, judge, es, outputs, pid, run, base, verdict="A")
        elif i == 4:
            _verdict(session, judge, es, outputs, pid, base, run, verdict="A")
            _verdict(session, judge, es, outputs, pid, run, base, verdict="A")
        else:
            _verdict(session, judge, es, outputs, pid, base, run, verdict=None)
            _verdict(session, judge, es, outputs, pid, run, base, verdict="A")
        for system, grade in ((base, 1 + i % 3), (run, 5 - i % 2)):
            _verdict(session, judge, es, outputs, pid, system, criterion="accuracy",
                     score=None if (i, system) == (5, base) else grade)
    session.commit()
    return es, judge, base, run, prompt_ids
