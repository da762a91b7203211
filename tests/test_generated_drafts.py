"""Drafts generated from documents and from failures: questions parsed from a model's lines, the import's gate
(no repeat of an eval prompt or a validation/test item reaches the drafts; each withheld one counted), and a real
job on the embedded model that turns a document's chunks into drafts that say where they came from."""
from __future__ import annotations

import pytest
from sqlmodel import select

from core.curate.curation import create_example
from core.curate.documents import add_document
from core.curate.origins import describe
from core.curate.screening import Withheld, screen
from core.errors import InvalidInput, PermissionDenied
from core.evaluate.docdrafts import chunk_sources, launch_generated_drafts, parse_lines
from core.evaluate.evalsets import create_eval_set_from_file
from storage.models import Example, JobStatus
from tests.fixtures_models import make_dataset_version
from tests.helpers import wait_for

FAQ = b"""# Refunds

Overpayments are refunded within 10 working days to the card you paid with. Refunds over 500 pounds need a
signed form from the account holder.

# Power cuts

In a power cut, call 105 from any phone. It is free and open day and night.
"""


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_questions_are_read_one_per_line_without_markers_or_repeats():
    text = ('Here are the questions:\n1. How long does a refund take?\n2) Who do I call in a power cut?\n'
            '- how long does a refund take?\n"Can I get my refund on my card?"\nOk.\n* Is 105 free to call?')
    assert parse_lines(text, 10) == ["Here are the questions:", "How long does a refund take?",
                                     "Who do I call in a power cut?", "Can I get my refund on my card?",
                                     "Is 105 free to call?"]
    assert parse_lines(text, 2) == ["Here are the questions:", "How long does a refund take?"]
    assert parse_lines("", 3) == [] and parse_lines("Yes.\nNo way.", 3) == []


def test_the_gate_withholds_repeats_of_eval_and_test_prompts_and_counts_them(session, project, users):
    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=3, n_validation=2)
    held = [i for i in session.exec(select(Example).where(Example.project_id == project.id)).all()][3:]
    test_prompt = held[0].turns[0]["content"]
    create_eval_set_from_file(session, eng, project.id, "checks",
                              b'{"prompt": "How long does a refund of an overpayment take to reach my card?"}\n',
                              "checks.jsonl")
    create_example(session, eng, project, turns=_user("Who do I call when the power goes off at night?")
                   + [{"role": "assistant", "content": "Call 105."}])
    prompts = [_user("How long does a refund of an overpayment take to reach my card?"),  # the eval prompt
               _user(test_prompt),  # a validation item, word for word
               _user(test_prompt.rstrip("?.!") + " please?"),  # ... and a near copy of it
               _user("Can I pay my bill at the post office?"),  # new
               _user("can I pay my bill at the  post office?")]  # generated twice
    withheld = Withheld()
    keep = screen(session, project.id, prompts, withheld)
    assert keep == [False, False, False, True, False], withheld.samples
    assert withheld.counts["eval_leak"] == 1 and withheld.counts["split_leak"] == 2
    assert withheld.counts["repeated"] == 1 and withheld.total == 4
    assert any(f"version {version.name}" in s["detail"] for s in withheld.samples)


def test_launch_checks_rights_sources_and_documents(session, project, users):
    doc = add_document(session, users["admin"], project, "faq.md", FAQ)
    sources = chunk_sources(session, project, [doc.id])
    assert [(s["document"], s["ordinal"], s["heading"]) for s in sources] == [("faq.md", 1, "Refunds"),
                                                                            ("faq.md", 2, "Power cuts")]
    with pytest.raises(PermissionDenied):
        launch_generated_drafts(session, users["annotator"], project.id, "base", "documents", sources)
    with pytest.raises(InvalidInput, match="Nothing to generate"):
        launch_generated_drafts(session, users["engineer"], project.id, "base", "documents", [])
    with pytest.raises(InvalidInput, match="between 1 and 10"):
        launch_generated_drafts(session, users["engineer"], project.id, "base", "documents", sources, per_source=11)
    add_document(session, users["admin"], project, "faq.md", FAQ + b"\nNew line.")
    with pytest.raises(InvalidInput, match="not a current document"):
        chunk_sources(session, project, [doc.id])


@pytest.mark.slow
def test_a_job_on_the_embedded_model_turns_a_documents_chunks_into_drafts(session, project, users, embedded_model):
    eng = users["engineer"]
    doc = add_document(session, users["admin"], project, "faq.md", FAQ)
    job = launch_generated_drafts(session, eng, project.id, "base", "documents", chunk_sources(session, project,
                                                                                             [doc.id]),
                                  per_source=2, base_model=str(embedded_model), decoding={"max_new_tokens": 60})
    job = wait_for(session, job.id, timeout=600)
    assert job.status == JobStatus.succeeded.value, job.error
    result = job.result
    assert result["sources"] == 2 and result["drafts"] >= 1, result
    assert result["drafts"] + sum(result["withheld"].values()) >= 1
    drafts = session.exec(select(Example).where(Example.project_id == project.id,
                                                Example.source == "document")).all()
    assert len(drafts) == result["drafts"] and sorted(e.id for e in drafts) == sorted(result["example_ids"])
    for ex in drafts:
        assert ex.status == "draft" and ex.origin["document"] == "faq.md" and ex.origin["ordinal"] in (1, 2)
        assert ex.turns[0]["role"] == "user" and len(ex.turns[0]["content"].split()) >= 3
        line = describe(ex.source, ex.origin, blind=True)
        assert line.startswith(f"Generated from faq.md §{ex.origin['ordinal']}")
        if ex.turns[-1]["content"]:
            assert ex.origin["drafted"]["text"] == ex.turns[-1]["content"]
