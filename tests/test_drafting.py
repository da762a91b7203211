"""Model-drafted answers: a draft-answers job on a small random model writes an answer into each prompt-only
example; an annotator's edit is measured (normalised character-level Levenshtein distance, checked against a
plain dynamic-programming reference) and shows in the per-system stats; the job never overwrites an answer."""
from __future__ import annotations

import json

import pytest
from sqlmodel import select

from core.curate.curation import save_example
from core.curate.importing import import_file
from core.errors import InvalidInput, PermissionDenied
from core.evaluate.drafting import (draft_edit_stats, draft_edits, drafting_jobs, launch_drafting, needs_answer,
                                    needs_answer_ids)
from storage.models import Example, ExampleRevision, Job, JobStatus
from tests.helpers import wait_for

QUESTIONS = ["How do I read my meter?", "Why did my bill double?", "Can I pay by card?"]


def levenshtein(a: str, b: str) -> int:
    """Edit distance by the textbook dynamic programme (the reference the library is checked against)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _import_questions(session, project, engineer, tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in QUESTIONS)
                    + json.dumps({"instruction": "Answered already", "output": "Yes."}) + "\n")
    report = import_file(session, engineer, project, path)
    assert report.n_needs_answer == 3
    return needs_answer_ids(session, project.id)


def test_launch_checks_roles_systems_and_that_something_needs_an_answer(session, project, users, tmp_path):
    with pytest.raises(InvalidInput, match="No example needs an answer"):
        launch_drafting(session, users["engineer"], project.id, "base")
    ids = _import_questions(session, project, users["engineer"], tmp_path)
    answered = session.exec(select(Example.id).where(Example.id.not_in(ids))).first()
    with pytest.raises(InvalidInput, match=f"#{answered} do"):
        launch_drafting(session, users["engineer"], project.id, "base", example_ids=[answered])
    with pytest.raises(PermissionDenied):
        launch_drafting(session, users["annotator"], project.id, "base")
    failed = Job(project_id=project.id, kind="train", status=JobStatus.failed.value, run_dir=str(tmp_path))
    session.add(failed)
    session.commit()
    with pytest.raises(InvalidInput, match="not finished"):
        launch_drafting(session, users["engineer"], project.id, f"run:{failed.id}")
    with pytest.raises(InvalidInput, match="Unknown system"):
        launch_drafting(session, users["engineer"], project.id, "gpt-5")


@pytest.mark.slow
def test_a_job_drafts_answers_and_the_experts_edits_are_measured(session, project, users, tiny_model, tmp_path):
    eng, anna = users["engineer"], users["annotator"]
    ids = _import_questions(session, project, eng, tmp_path)
    # One example is answered by hand before the job is launched: it is not drafted.
    first = session.get(Example, ids[0])
    save_example(session, anna, first.id, expected_version=first.version, system="",
                 turns=first.turns[:-1] + [{"role": "assistant", "content": "Read the digits."}])
    job = launch_drafting(session, eng, project.id, "base", base_model=str(tiny_model),
                          # Sampled: greedy decoding of a random model repeats a special token (an empty answer).
                          decoding={"do_sample": True, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 12,
                                    "seed": 1})
    assert job.kind == "draft" and job.config["example_ids"] == ids[1:]
    job = wait_for(session, job.id)
    assert job.status == JobStatus.succeeded.value, job.error
    assert job.result["total"] == 2 and job.result["already_answered"] == 0
    assert (job.result["drafted"], job.result["empty"], job.result["skipped"]) == (2, 0, 0)
    session.expire_all()
    assert session.get(Example, ids[0]).turns[-1]["content"] == "Read the digits."
    drafted = [session.get(Example, i) for i in ids[1:]]
    assert not any(needs_answer(e) for e in drafted) and needs_answer_ids(session, project.id) == []
    ex = drafted[0]
    info = ex.origin["drafted"]
    assert (info["system"], info["label"], info["job_id"]) == ("base", "base model", job.id)
    assert ex.turns[-1]["content"] == info["text"] and info["text"].strip()
    assert ex.status == "draft" and ex.version == 2 and ex.origin["needs_answer"] is True
    step = session.exec(select(ExampleRevision).where(ExampleRevision.example_id == ex.id)).all()[-1]
    assert (step.action, step.user_id) == ("drafted by model", eng.id)
    assert drafting_jobs(session, eng, project.id)[0]["drafted"] == job.result["drafted"]
    # Nothing is measured until an expert submits; then the edit distance per system.
    assert draft_edit_stats(session, anna, project.id) == [
        {"system": "base", "label": "base model", "submitted": 0, "mean_edit_distance": None, "unchanged": 0,
         "waiting": len(drafted)}]
    final = "Thanks for asking. " + info["text"][: len(info["text"]) // 2]
    save_example(session, anna, ex.id, expected_version=ex.version, system=ex.system,
                 turns=ex.turns[:-1] + [{"role": "assistant", "content": final}], submit=True)
    expected = levenshtein(info["text"], final) / max(len(info["text"]), len(final))
    [row] = draft_edits(session, project.id)
    assert (row["example_id"], row["edited_by"], row["status"]) == (ex.id, anna.username, "submitted")
    assert row["distance"] == pytest.approx(expected, abs=1e-4)
    [stats] = draft_edit_stats(session, anna, project.id)
    assert (stats["submitted"], stats["waiting"], stats["unchanged"]) == (1, len(drafted) - 1, 0)
    assert stats["mean_edit_distance"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_cli_draft_answers_and_stats(workspace, session, project, users, tiny_model, tmp_path):
    from tests.helpers import cli

    ids = _import_questions(session, project, users["engineer"], tmp_path)
    out = cli(workspace, "draft-answers", "--project", str(project.id), "--system", "base", "--base-model",
              str(tiny_model), "--ids", f"{ids[0]},{ids[2]}", "--temperature", "1.0", "--max-new-tokens", "8",
              "--wait", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert (row["status"], row["examples"], row["drafted"]) == ("succeeded", 2, 2)
    session.expire_all()
    assert [needs_answer(session.get(Example, i)) for i in ids] == [False, True, False]
    stats = cli(workspace, "draft-stats", "--project", str(project.id), "--json")
    assert json.loads(stats.stdout) == [{"system": "base", "label": "base model", "submitted": 0,
                                         "mean_edit_distance": None, "unchanged": 0, "waiting": 2}]
    bad = cli(workspace, "draft-answers", "--project", str(project.id), "--system", "base", "--ids", str(ids[0]))
    assert bad.returncode == 1 and bad.stderr.startswith(f"error: Example(s) #{ids[0]} do not need an answer")
