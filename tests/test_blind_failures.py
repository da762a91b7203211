"""Failure drafts keep the review blind (issue 19): a draft made by "Send failures to annotation" starts from the
reference answer or empty, never from a system's answer; its note names no run and no score; and what a user below
engineer reads of its provenance names no system, no score and not which answer it started from, while an engineer
still sees all of it."""
from __future__ import annotations

from core.curate import origins
from core.evaluate.failures import send_failures
from storage.models import Example
from tests.helpers import make_outputs, score_failures

BASE_TEXT = "I am not sure about"  # every base answer of make_outputs starts so
RUN_TEXT = "Call us on 0800 000."  # every run answer (and the reference, when there is one)
SECRETS = ("secret-lora", "run:", "run ", "base model", "accuracy", "mean", "<=", "lost to", BASE_TEXT)


def _drafts(session, project, users, reviewers, references: bool) -> tuple[list[Example], str]:
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1, references=references)
    score_failures(session, es, reviewers[:2])
    out = send_failures(session, users["engineer"], es.id, systems[1], rule="either", criterion="accuracy",
                        threshold=2)
    assert out["sent"] == 2
    return [session.get(Example, i) for i in out["example_ids"]], systems[1]


def test_failure_drafts_start_blind_and_their_note_names_no_system(session, project, users, reviewers):
    drafts, run = _drafts(session, project, users, reviewers, references=False)
    for ex in drafts:
        # No reference: the annotator writes the answer; neither the base's nor the run's answer is copied in.
        assert ex.turns[-1]["content"] == "", ex.turns[-1]["content"]
        assert ex.origin["start"] == "empty"
        assert not any(word in ex.note for word in SECRETS), ex.note
        # The lineage stays in the origin, for engineers.
        assert ex.origin["run"] == run and ex.origin["run_label"].endswith("secret-lora-0")
    assert any("too vague" in ex.note for ex in drafts)  # the reviewers' comments still reach the annotator


def test_below_engineer_the_provenance_names_no_system_score_or_start(session, project, users, reviewers):
    drafts, _ = _drafts(session, project, users, reviewers, references=False)
    legacy = dict(drafts[0].origin, start="base")  # a draft sent before the fix, from the base's answer
    for origin in (drafts[0].origin, drafts[1].origin, legacy):
        for role in ("annotator", "reviewer"):
            assert not origins.sees_systems(users[role], origin)
            line = origins.describe("eval_failure", origin, blind=not origins.sees_systems(users[role], origin))
            assert line.startswith("A failure found on the Results page: eval set ")
            assert not any(word in line for word in SECRETS), line
        for role in ("engineer", "admin"):
            assert origins.sees_systems(users[role], origin)
            line = origins.describe("eval_failure", origin, blind=not origins.sees_systems(users[role], origin))
            assert "secret-lora-0" in line
    assert "base model's answer" in origins.describe("eval_failure", legacy, blind=False)
    assert origins.sees_systems(users["annotator"], {})  # a hand-written example hides nothing


def test_with_a_reference_the_draft_starts_from_it(session, project, users, reviewers):
    drafts, _ = _drafts(session, project, users, reviewers, references=True)
    for ex in drafts:
        assert (ex.origin["start"], ex.turns[-1]["content"]) == ("reference", RUN_TEXT)
        line = origins.describe("eval_failure", ex.origin, blind=True)
        assert line.endswith("the draft started from the reference answer.")
