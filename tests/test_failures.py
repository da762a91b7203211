"""Failures back to the experts: the lost-to-base and low-score rules each pick the right prompts, every draft
keeps its lineage and starts from the right answer, a second send adds nothing, and the counts by status follow
the drafts through annotation and review."""
from __future__ import annotations

import json

import pytest

from core.curate.curation import next_for, review_example, submit_example
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.evaluate import review
from core.evaluate.evalsets import eval_prompts
from core.evaluate.failures import find_failures, send_failures, sent_failures
from storage.models import DatasetVersion, DatasetVersionItem, Example
from tests.helpers import make_outputs, score_failures

@pytest.fixture
def failing(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1, references=False)
    prompts = score_failures(session, es, reviewers[:2])
    return es, systems[1], prompts


def _positions(items):
    return sorted(i["prompt"].position for i in items)


def test_each_rule_picks_the_right_prompts(session, users, failing):
    es, run, _ = failing
    eng = users["engineer"]
    assert _positions(find_failures(session, eng, es.id, run, rule="lost_to_base")) == [0]
    assert _positions(find_failures(session, eng, es.id, run, rule="low_score", criterion="accuracy",
                                    threshold=2)) == [0, 3]
    assert _positions(find_failures(session, eng, es.id, run, rule="low_score", criterion="accuracy",
                                    threshold=2.5)) == [0, 1, 3]
    both = find_failures(session, eng, es.id, run, rule="either", criterion="accuracy", threshold=1.5)
    assert {i["prompt"].position: i["caught"] for i in both} == {
        0: ["lost_to_base"], 3: ["low_score: accuracy 1.5 <= 1.5"]}
    with pytest.raises(InvalidInput, match="criterion"):
        find_failures(session, eng, es.id, run, rule="low_score", criterion="speed", threshold=2)
    with pytest.raises(InvalidInput, match="between 1 and 5"):
        find_failures(session, eng, es.id, run, rule="low_score", criterion="accuracy", threshold=9)
    with pytest.raises(InvalidInput, match="fine-tuned run"):
        find_failures(session, eng, es.id, "base")
    with pytest.raises(NotFound, match="no outputs"):
        find_failures(session, eng, es.id, "run:999")
    with pytest.raises(PermissionDenied):
        send_failures(session, users["reviewer"], es.id, run)


def test_drafts_keep_their_lineage_start_empty_without_a_reference_and_go_to_the_assignee(session, users, failing):
    es, run, prompts = failing
    eng, anna = users["engineer"], users["annotator"]
    out = send_failures(session, eng, es.id, run, rule="either", criterion="accuracy", threshold=2,
                        assignee=anna.id)
    assert (out["caught"], out["sent"], out["already_sent"], out["leaks"]) == (2, 2, 0, [])
    drafts = {session.get(Example, i).origin["position"]: session.get(Example, i) for i in out["example_ids"]}
    lost, low = drafts[0], drafts[3]
    for ex in (lost, low):
        assert ex.status == "draft" and ex.source == "eval_failure" and ex.assigned_to == anna.id
        assert ex.origin["eval_set_id"] == es.id and ex.origin["eval_set"] == es.name and ex.origin["run"] == run
        assert ex.origin["rule"] == "either" and ex.turns[0] == prompts[ex.origin["position"]].messages[-1]
    assert lost.origin["prompt_id"] == prompts[0].id
    assert lost.origin["caught"] == ["lost_to_base", "low_score: accuracy 2 <= 2"]
    assert low.origin["caught"] == ["low_score: accuracy 1.5 <= 2"]
    assert lost.origin["scores"]["votes"] == {"run": 0, "base": 2, "tie": 0, "both_bad": 0, "reviewers": 2}
    assert lost.origin["scores"]["means"]["accuracy"] == {"run": 2, "base": 3}
    assert [c["comment"] for c in lost.origin["comments"]] == ["too vague"]
    assert lost.origin["comments"][0]["reviewer"] == users["reviewer"].username
    # No reference: the annotator writes the answer (a system's answer would unblind reviewers who can annotate).
    assert (lost.origin["start"], lost.turns[-1]["content"]) == ("empty", "")
    assert (low.origin["start"], low.turns[-1]["content"]) == ("empty", "")
    assert "too vague" in lost.note and "wrong number" in low.note
    assert next_for(session, es_project(session, es), anna).id == min(out["example_ids"])


def es_project(session, es):
    from storage.models import Project

    return session.get(Project, es.project_id)


def test_resending_adds_no_duplicates_and_counts_follow_the_drafts(session, users, failing):
    es, run, _ = failing
    eng = users["engineer"]
    first = send_failures(session, eng, es.id, run, rule="lost_to_base")
    assert first["sent"] == 1
    again = send_failures(session, eng, es.id, run, rule="either", criterion="accuracy", threshold=2)
    assert (again["caught"], again["sent"], again["already_sent"]) == (2, 1, 1)
    third = send_failures(session, eng, es.id, run, rule="either", criterion="accuracy", threshold=2)
    assert (third["sent"], third["already_sent"]) == (0, 2)
    assert sent_failures(session, eng, es.id)["by_status"] == {"draft": 2, "submitted": 0, "approved": 0,
                                                               "rejected": 0}
    a, b = (session.get(Example, i) for i in first["example_ids"] + again["example_ids"])
    submit_example(session, users["annotator"], a.id, a.version)
    submit_example(session, users["annotator"], b.id, b.version)
    review_example(session, users["reviewer"], a.id, "approve")
    status = sent_failures(session, eng, es.id)
    assert status["total"] == 2
    assert status["by_status"] == {"draft": 0, "submitted": 1, "approved": 1, "rejected": 0}
    assert status["by_run"][run]["approved"] == 1


def _first_prompt_in_a_test_split(session, project, prompts) -> None:
    """Prompt #0 (the first prompt, "#1" to a person) is an example frozen into a version's test split."""
    version = DatasetVersion(project_id=project.id, name="v1", content_hash="x")
    session.add(version)
    session.commit()
    session.add(DatasetVersionItem(version_id=version.id, example_id=4242, split="test",
                                   turns=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]))
    prompts[0].example_id = 4242
    session.add(prompts[0])
    session.commit()


def test_a_reference_is_the_start_and_test_split_prompts_are_reported(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1, references=True)
    prompts = score_failures(session, es, reviewers[:2])
    _first_prompt_in_a_test_split(session, project, prompts)
    out = send_failures(session, users["engineer"], es.id, systems[1], rule="lost_to_base")
    assert out["leaks"] == [{"position": 0, "example_id": 4242}]
    ex = session.get(Example, out["example_ids"][0])
    assert ex.origin["start"] == "reference" and ex.turns[-1]["content"] == "Call us on 0800 000."
    assert ex.origin["test_split_example_id"] == 4242


def test_lost_to_base_needs_the_base_compared(session, project, users, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=2, runs=2)
    run1 = systems[1]
    # Only the two runs are compared (run 1 scores 2 on accuracy, whichever side it is shown on): nobody has judged
    # run 1 against the base.
    for p in eval_prompts(session, es.id):
        for rev in reviewers[:2]:
            pair = review.pair_key(run1, systems[2])
            item = review.get_item(session, rev, es.id, p.id, pair)
            mine = "A" if item._system_a == run1 else "B"
            scores = {c: {mine: 2, "B" if mine == "A" else "A": 4} for c in ("accuracy", "tone", "helpfulness")}
            review.submit_score(session, rev, es.id, p.id, pair, scores=scores, preference="tie")
    with pytest.raises(InvalidInput, match="No reviewer has compared this run with the base"):
        send_failures(session, users["engineer"], es.id, run1, rule="lost_to_base")
    caught = find_failures(session, users["engineer"], es.id, run1, rule="low_score", criterion="accuracy",
                           threshold=2)
    assert _positions(caught) == [0, 1]
    assert {i["judgement"]["means"]["accuracy"]["run"] for i in caught} == {2}
    assert all(i["judgement"]["votes"]["reviewers"] == 0 for i in caught)


def test_bad_assignee_is_refused_and_nothing_is_sent(session, users, failing):
    es, run, _ = failing
    with pytest.raises(InvalidInput, match="Assign"):
        send_failures(session, users["engineer"], es.id, run, assignee=99999)
    assert sent_failures(session, users["engineer"], es.id)["total"] == 0


@pytest.mark.slow
def test_cli_send_failures(workspace, session, users, failing):
    from tests.helpers import cli

    es, run, _ = failing
    out = cli(workspace, "send-failures", "--eval-set", str(es.id), "--run", run, "--rule", "low_score",
              "--criterion", "accuracy", "--threshold", "2", "--assign", "annotator1", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert (row["caught"], row["sent"], row["now_draft"]) == (2, 2, 2)
    again = cli(workspace, "send-failures", "--eval-set", str(es.id), "--run", run, "--rule", "low_score",
                "--criterion", "accuracy", "--threshold", "2", "--json")
    assert json.loads(again.stdout)["already_sent"] == 2
    bad = cli(workspace, "send-failures", "--eval-set", str(es.id), "--run", run, "--rule", "low_score")
    assert bad.returncode == 1 and bad.stderr.startswith("error: Choose a rubric criterion")


def test_cli_names_test_split_prompts_counted_from_one_as_every_page_does(workspace, session, project, users,
                                                                          failing):
    from tests.helpers import cli

    es, run, prompts = failing
    _first_prompt_in_a_test_split(session, project, prompts)
    out = cli(workspace, "send-failures", "--eval-set", str(es.id), "--run", run, "--rule", "lost_to_base", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["test_split_prompts"] == "#1"  # Results and Generate say "prompt 1" too
