"""Prompt-only records (a question without its answer) are imported as drafts that need an answer, in every
record format, counted in the report; an answer field that is there but empty is still refused."""
from __future__ import annotations

import json

import pytest
from sqlmodel import select

from core.curate.curation import save_example
from core.curate.importing import import_file
from core.errors import InvalidInput
from storage.models import Example, ImportRecord


def _lines(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def _drafts(session, project) -> dict[str, Example]:
    rows = session.exec(select(Example).where(Example.project_id == project.id)).all()
    return {next(t["content"] for t in reversed(e.turns) if t["role"] == "user"): e for e in rows}


@pytest.mark.parametrize("fmt,records", [
    ("alpaca", [{"instruction": "How do I read my meter?"}, {"instruction": "Pay by card?", "output": "Yes."}]),
    ("prompt_completion", [{"prompt": "How do I read my meter?"}, {"prompt": "Pay by card?", "completion": "Yes."}]),
    ("chat", [{"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "How do I read my meter?"}]},
              {"messages": [{"role": "user", "content": "Pay by card?"}, {"role": "assistant", "content": "Yes."}]}]),
    ("sharegpt", [{"conversations": [{"from": "human", "value": "How do I read my meter?"}]},
                  {"conversations": [{"from": "human", "value": "Pay by card?"}, {"from": "gpt", "value": "Yes."}]}]),
])
def test_prompt_only_records_land_as_drafts_that_need_an_answer(session, project, users, tmp_path, fmt, records):
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text(_lines(*records))
    report = import_file(session, users["engineer"], project, path)  # format detected from the first record
    assert (report.n_imported, report.n_rejected, report.n_needs_answer) == (2, 0, 1)
    assert "1 of them prompt-only: drafts that need an answer" in report.message
    assert session.get(ImportRecord, report.import_id).report["n_needs_answer"] == 1
    drafts = _drafts(session, project)
    question = drafts["How do I read my meter?"]
    assert question.status == "draft" and question.origin == {"needs_answer": True}
    assert question.turns[-1] == {"role": "assistant", "content": ""}
    assert drafts["Pay by card?"].origin == {} and drafts["Pay by card?"].turns[-1]["content"] == "Yes."
    # It cannot be submitted until someone writes the answer.
    with pytest.raises(InvalidInput, match="empty assistant message"):
        save_example(session, users["annotator"], question.id, expected_version=question.version,
                     system=question.system, turns=question.turns, submit=True)
    answered = question.turns[:-1] + [{"role": "assistant", "content": "Read the digits left to right."}]
    saved = save_example(session, users["annotator"], question.id, expected_version=question.version,
                         system=question.system, turns=answered, submit=True)
    assert saved.status == "submitted"


def test_multi_turn_chat_ending_on_the_user_and_csv_without_an_output_column(session, project, users, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(_lines({"messages": [{"role": "user", "content": "My bill doubled."},
                                         {"role": "assistant", "content": "Did you send a reading?"},
                                         {"role": "user", "content": "No, it was estimated."}]}))
    report = import_file(session, users["engineer"], project, chat)
    assert (report.n_imported, report.n_needs_answer) == (1, 1)
    ex = _drafts(session, project)["No, it was estimated."]
    assert [t["role"] for t in ex.turns] == ["user", "assistant", "user", "assistant"] and ex.turns[-1]["content"] == ""

    csv_path = tmp_path / "questions.csv"
    csv_path.write_text("question,tags\nWhen is my bill due?,billing\nCan I move my meter?,meters\n")
    report = import_file(session, users["engineer"], project, csv_path)
    assert (report.n_imported, report.n_rejected, report.n_needs_answer) == (2, 0, 2)
    assert _drafts(session, project)["Can I move my meter?"].tags == ["meters"]


def test_present_but_empty_answers_and_bad_prompts_are_still_refused(session, project, users, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_lines({"prompt": "Q?", "completion": ""},
                           {"prompt": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]},
                           {"messages": [{"role": "system", "content": "only a system prompt"}]}))
    report = import_file(session, users["engineer"], project, path, "prompt_completion")
    assert report.n_imported == 0 and report.n_needs_answer == 0 and report.n_rejected == 3
    reasons = [r["reason"] for r in report.rejected]
    assert reasons[0] == "empty field 'completion'"
    assert reasons[1] == "'prompt' has no completion and does not end with a user message"
