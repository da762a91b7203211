"""+prompt and +rag systems in evaluation (issue 24): a generation job answers with them on the plain system's one
loaded model, each answer keeping the prompt tokens it cost and, for +rag, the passages it was given (the ones
search returns); engineers see those passages on Generate, blind reviewers never see them nor which variant answered
on Compare; engineers set the team prompt and top k on the Documents page."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from sqlmodel import select

from storage.models import Job, Output, Project
from tests.fixtures_variants import TEAM_PROMPT, ready
from tests.helpers import fill_score_sheet, full_scores, page, rendered_text

QUESTIONS = ["How long does my refund take?", "Who do I call about a power cut?", "Hi"]
SECRET = "Refunds reach the card within 10 working days (internal passage 7731)."


def _eval_set(session, project, users):
    from core.evaluate.evalsets import create_eval_set_from_file

    lines = "\n".join(json.dumps({"prompt": q, "reference": "Call 105."}) for q in QUESTIONS)
    return create_eval_set_from_file(session, users["engineer"], project.id, "rag set", lines, "prompts.jsonl")


@pytest.mark.slow
def test_generation_job_answers_with_variants_storing_passages_and_prompt_tokens(session, project, users,
                                                                               tiny_model, tmp_path, capfd):
    from core.basemodel import load_tokenizer
    from core.curate.documents import search
    from core.evaluate.augment import augment
    from core.evaluate.evalsets import eval_prompts
    from core.evaluate.generate import prompt_texts
    from core.evaluate.generate_config import Decoding, GenerateConfig
    from core.evaluate.generate_job import run_job

    project = ready(session, project, users, top_k=2)
    es = _eval_set(session, project, users)
    systems = ["base", "base+prompt", "base+rag"]
    cfg = GenerateConfig(eval_set_id=es.id, systems=systems, base_model=str(tiny_model),
                         decoding=Decoding(max_new_tokens=4), batch_size=2, perplexity=False)
    job = Job(project_id=project.id, kind="generate", action="evaluate", name="gen", config=asdict(cfg),
              module="core.evaluate.generate_job", created_by=users["engineer"].id, eval_set_id=es.id,
              run_dir=str(tmp_path / "gen"))
    Path(job.run_dir).mkdir()
    session.add(job)
    session.commit()
    result = run_job(job.id)
    assert result["done"] == len(QUESTIONS) * len(systems), result
    assert capfd.readouterr().out.count("loading base model") == 1  # the variants share the base's one load

    tokenizer = load_tokenizer(str(tiny_model))
    outputs = {(o.prompt_id, o.system): o for o in session.exec(select(Output).where(Output.job_id == job.id))}
    for prompt in eval_prompts(session, es.id):
        question = prompt.messages[-1]["content"]
        for system in systems:
            out = outputs[(prompt.id, system)]
            text = prompt_texts(tokenizer, [augment(session, project, system, prompt.messages).messages])[0]
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            assert out.prompt_tokens == tokens, (system, question)  # the prompt actually sent, counted
            assert (TEAM_PROMPT in text) == (system == "base+prompt")
            assert out.seconds > 0
        hits = search(session, project, question, k=2)
        assert outputs[(prompt.id, "base+rag")].context == [
            {"document": h.document, "version": h.version, "chunk": h.ordinal, "heading": h.heading, "text": h.text}
            for h in hits]
        assert outputs[(prompt.id, "base")].context == [] and outputs[(prompt.id, "base+prompt")].context == []
        assert outputs[(prompt.id, "base+prompt")].prompt_tokens != outputs[(prompt.id, "base")].prompt_tokens
    first = eval_prompts(session, es.id)[0]  # "How long does my refund take?"
    assert any("refunded within 10 working days" in c["text"] for c in outputs[(first.id, "base+rag")].context)


def _variant_outputs(session, project, users):
    """An eval set answered by base+rag (with a passage in its context) and a run+prompt, as a job writes them."""
    from core.evaluate.evalsets import eval_prompts

    es = _eval_set(session, project, users)
    run = Job(project_id=project.id, kind="train", name="secret-lora", status="succeeded", run_dir="/nowhere",
              created_by=users["engineer"].id)
    session.add(run)
    session.commit()
    systems = ["base+rag", f"run:{run.id}+prompt"]
    chunk = {"document": "faq.md", "version": 1, "chunk": 1, "heading": "Refunds", "text": SECRET}
    for p in eval_prompts(session, es.id):
        for system in systems:
            session.add(Output(prompt_id=p.id, system=system, text=f"Answer {p.id} of one system {len(system)}.",
                               decoding={"mode": "greedy"}, n_new_tokens=5, seconds=0.1, prompt_tokens=300,
                               context=[chunk] if system == "base+rag" else []))
    session.commit()
    return es, systems


def test_compare_never_shows_a_reviewer_the_passages_or_the_variant(session, project, users):
    _variant_outputs(session, project, users)
    at = page("compare.py", users["reviewer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    for _ in range(2):
        text = rendered_text(at)
        assert "Answer A" in text and "Answer B" in text
        for secret in ("7731", SECRET, "faq.md", "Refunds", "+rag", "+prompt", "retrieved", "team's prompt",
                       "passage", "secret-lora", "prompt tokens"):
            assert secret.lower() not in text.lower(), secret
        fill_score_sheet(at, full_scores(4, 3), "A")
        at.button(key="cmp_submit").click().run()
        assert not at.exception, [e.value for e in at.exception]


def test_generate_shows_engineers_the_passages_of_each_rag_answer(session, project, users):
    _variant_outputs(session, project, users)
    at = page("generate.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = rendered_text(at)
    assert "Passages given to +rag systems (3 answers in this eval set)" in text
    assert SECRET in text and "faq.md (version 1) §1 — Refunds" in text
    assert "base model, with retrieved documents" in text  # the answer is named for the engineer
    options = next(m for m in at.multiselect if m.label == "Systems").options
    assert any(o.endswith("with retrieved documents") for o in options)


def test_documents_page_sets_the_team_prompt_and_top_k(session, demo, users):
    from core.curate.demo import FACT_SHEET

    at = page("documents.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    area = next(a for a in at.text_area if a.label == "Team prompt for +prompt systems")
    assert area.value == FACT_SHEET.read_text(encoding="utf-8").strip()  # suggested while the project has none
    area.input("Answer as Brightwater's support team.")
    next(n for n in at.number_input if n.label.startswith("Passages per question")).set_value(4)
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    session.expire_all()
    saved = session.get(Project, demo.id)
    assert (saved.team_prompt, saved.rag_top_k) == ("Answer as Brightwater's support team.", 4)
    annotator = page("documents.py", users["annotator"]).run()
    assert not any(a.label == "Team prompt for +prompt systems" for a in annotator.text_area)


@pytest.mark.slow
def test_serve_model_answers_a_rag_key_with_the_passages_in_its_prompt(session, project, users, workspace,
                                                                       tiny_model):
    import signal

    from core.basemodel import load_tokenizer
    from core.evaluate.augment import augment
    from core.evaluate.generate import prompt_texts
    from tests.fixtures_serve import SERVING_RE, post, serve_model

    project = ready(session, project, users)
    question = [{"role": "user", "content": "How long does my refund take?"}]
    proc, url, lines = serve_model(workspace, f"base:{tiny_model}+rag", "--port", "0", "--idle-timeout", "600")
    try:
        served = next(m.group(2) for m in map(SERVING_RE.search, lines) if m)
        assert served.endswith("+rag")
        answer = post(url, "/chat/completions", {"model": served, "messages": question, "max_tokens": 3})
        assert answer.status_code == 200, answer.text
        tokenizer = load_tokenizer(str(tiny_model))
        sent = augment(session, project, served, question).messages
        assert "refunded within 10 working days" in sent[0]["content"]
        expected = len(tokenizer(prompt_texts(tokenizer, [sent])[0], add_special_tokens=False)["input_ids"])
        assert answer.json()["usage"]["prompt_tokens"] == expected  # the passages reached the model
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines)


def test_playground_shows_the_passages_beside_a_rag_answer(session, project, users):
    from core.evaluate.generate_config import Decoding

    chunk = {"document": "faq.md", "version": 1, "chunk": 1, "heading": "Refunds", "text": SECRET}
    answer = {"role": "assistant", "content": "Ten working days.", "system": "base+rag", "label": "Base model, rag",
              "system_prompt": "", "decoding": asdict(Decoding()), "tokens": 3, "tokens_per_s": 9.0,
              "first_token_s": 0.2, "finish": "stop", "context": [chunk]}
    at = page("playground.py", users["engineer"])
    state = dict(pg_project=project.id, pg_chat_no=0, pg_outbox=None, pg_streaming=None,
                 pg_chats={0: [{"role": "user", "content": "How long does my refund take?"}, answer], 1: []})
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(e.label == "Passages given (1)" for e in at.expander)
    assert f"[1] faq.md §1 Refunds\n{SECRET}" in [t.value for t in at.text]
    options = at.selectbox(key="pg_sys_0").options
    assert any(o.endswith("with retrieved documents") for o in options)
