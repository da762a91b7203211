"""+prompt and +rag systems (issue 24): the messages each sends (team prompt first, or the passages search
returns), the refusals that name the fix, and the same systems offered by Generate, the Playground and serve-model.
No model is loaded here (tests/test_variants_generate.py generates with them)."""
from __future__ import annotations

import pytest
from sqlmodel import select

from core.errors import InvalidInput, PermissionDenied
from storage.models import Job
from tests.fixtures_variants import QUESTION, TEAM_PROMPT, ready


def test_prompt_variant_puts_the_team_prompt_before_the_examples_own(session, project, users):
    from core.evaluate.augment import augment

    project = ready(session, project, users)
    sent = augment(session, project, "run:7+prompt", QUESTION)
    assert sent.messages == [{"role": "system", "content": TEAM_PROMPT + "\n\nBe brief."}, QUESTION[1]]
    assert sent.context == []
    no_system = augment(session, project, "base+prompt", QUESTION[1:])
    assert no_system.messages == [{"role": "system", "content": TEAM_PROMPT}, QUESTION[1]]
    assert augment(session, project, "base", QUESTION).messages == QUESTION  # the plain system: as it is


def test_rag_variant_gives_the_passages_search_returns_with_their_names(session, project, users):
    from core.curate.documents import search
    from core.evaluate.augment import augment

    project = ready(session, project, users, top_k=1)
    sent = augment(session, project, "base+rag", QUESTION)
    hits = search(session, project, "How long does my refund take?", k=1)
    assert [(c["document"], c["chunk"], c["text"]) for c in sent.context] == \
        [(h.document, h.ordinal, h.text) for h in hits]
    assert "refunded within 10 working days" in sent.context[0]["text"]
    system = sent.messages[0]["content"]
    assert sent.messages[0]["role"] == "system" and sent.messages[1:] == QUESTION[1:]
    assert f"faq.md §{hits[0].ordinal} — Refunds" in system and "refunded within 10 working days" in system
    assert "0800 111 999" not in system  # top k = 1: the outage passage is not given
    assert system.endswith("Be brief.")  # the example's own system prompt follows the passages
    project.rag_top_k = 2
    both = augment(session, project, "base+rag", [{"role": "user", "content": "A refund after a power cut?"}])
    assert [c["heading"] for c in both.context] == ["Refunds", "Outages"] or \
        [c["heading"] for c in both.context] == ["Outages", "Refunds"]  # top k = 2: two passages
    nothing = augment(session, project, "base+rag", [{"role": "user", "content": "zzzz qqqq"}])
    assert nothing.context == [] and nothing.messages == [{"role": "user", "content": "zzzz qqqq"}]


def test_variants_are_refused_without_a_team_prompt_or_documents_naming_the_fix(session, project, users, tmp_path):
    from core.evaluate.augment import augment
    from core.evaluate.evalsets import create_eval_set_from_file
    from core.evaluate.generate import launch_generation

    with pytest.raises(InvalidInput, match="no team prompt.*Documents page"):
        augment(session, project, "base+prompt", QUESTION)
    with pytest.raises(InvalidInput, match="no documents.*Documents page"):
        augment(session, project, "run:3+rag", QUESTION)
    es = create_eval_set_from_file(session, users["engineer"], project.id, "v", '{"prompt": "Hi"}', "p.jsonl")
    for key in ("base+prompt", "base+rag"):
        with pytest.raises(InvalidInput, match="Documents page"):
            launch_generation(session, users["engineer"], es.id, ["base", key])
    assert not session.exec(select(Job).where(Job.kind == "generate")).all()  # refused before queueing
    from core.evaluate.drafting import DraftConfig

    with pytest.raises(InvalidInput, match="choose run:4"):  # drafts are written by a model alone
        DraftConfig(system="run:4+rag")
    ready(session, project, users, team_prompt="")
    with pytest.raises(InvalidInput, match="no team prompt"):
        augment(session, project, "base+prompt", QUESTION)
    assert augment(session, project, "base+rag", QUESTION).context  # documents now: +rag answers


def test_generate_offers_every_system_plain_and_with_each_variant(session, project, users):
    from core.evaluate.systems import available_systems, default_systems, parse_systems, system_labels

    run = Job(project_id=project.id, kind="train", name="lora-a", status="succeeded", run_dir="/nowhere",
              created_by=users["engineer"].id, config={"base_model": "some/base"})
    session.add(run)
    session.commit()
    rows = available_systems(session, users["engineer"], project.id, variants=True)
    r = f"run:{run.id}"
    assert [x["system"] for x in rows] == ["base", "base+prompt", "base+rag", r, f"{r}+prompt", f"{r}+rag"]
    labels = {x["system"]: x["label"] for x in rows}
    assert labels[f"{r}+rag"] == f"Run {run.id}: lora-a, with retrieved documents"
    assert labels["base+prompt"] == "Base model (no adapter), with the team's prompt"
    assert {x["base_model"] for x in rows if x["system"].startswith(r)} == {"some/base"}
    assert default_systems(rows) == ["base", r]  # a fair first comparison: plain systems
    assert [x["system"] for x in available_systems(session, users["engineer"], project.id)] == ["base", r]
    assert parse_systems(f"base+rag, {run.id}+prompt") == ["base+rag", f"{r}+prompt"]
    assert system_labels(session, ["base+rag"]) == {"base+rag": "base model, with retrieved documents"}


def test_team_prompt_and_passages_per_question_are_set_by_engineers(session, project, users, demo):
    from core.curate.demo import FACT_SHEET
    from core.evaluate.augment import set_team_prompt, suggested_team_prompt

    with pytest.raises(PermissionDenied):
        set_team_prompt(session, users["annotator"], project, team_prompt="x")
    with pytest.raises(InvalidInput, match="between 1 and 20"):
        set_team_prompt(session, users["engineer"], project, rag_top_k=0)
    saved = set_team_prompt(session, users["admin"], project, team_prompt="  Be kind.  ", rag_top_k=5)
    assert (saved.team_prompt, saved.rag_top_k) == ("Be kind.", 5)
    assert suggested_team_prompt(session, project) == ""  # no documents yet: nothing to suggest
    assert suggested_team_prompt(session, demo) == FACT_SHEET.read_text(encoding="utf-8").strip()


def test_playground_offers_the_variants_and_sends_the_plain_system_the_passages(session, project, users):
    from core.ship.playground import chat_request, systems

    project = ready(session, project, users)
    keys = [s.key for s in systems(session, users["engineer"], project.id, variants=True)]
    base = keys[0]
    assert keys[:3] == [base, f"{base}+prompt", f"{base}+rag"]
    labels = {s.key: s.label for s in systems(session, users["engineer"], project.id, variants=True)}
    assert [s.key for s in systems(session, users["engineer"], project.id)] == [base]  # the Pilot page's list
    assert labels[f"{base}+rag"] == labels[base] + ", with retrieved documents"
    asked, sent = chat_request(session, project, f"{base}+rag", "Be brief.", [QUESTION[1]])
    assert asked == base  # the same model, loaded once for both
    assert "refunded within 10 working days" in sent.messages[0]["content"]
    assert sent.context and sent.context[0]["document"] == "faq.md"
    asked, sent = chat_request(session, project, base, "Be brief.", [QUESTION[1]])
    assert (asked, sent.messages, sent.context) == (base, QUESTION, [])


def test_serve_model_gives_each_chat_request_of_a_variant_its_messages(session, project, users):
    from core.ship.guard import Refused
    from core.ship.serving import ServeConfig, launch_server
    from core.ship.variants import chat_rewriter

    body = {"model": "base+prompt", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 5}
    with pytest.raises(Refused, match="no team prompt") as refused:
        chat_rewriter("", project.id)(body)
    assert refused.value.status == 400
    with pytest.raises(InvalidInput, match="no team prompt"):  # serve-model refuses it before starting
        launch_server(session, users["engineer"], project.id, ServeConfig(system="base+prompt"))
    ready(session, project, users)
    sent = chat_rewriter("", project.id)(body)
    assert sent == {**body, "messages": [{"role": "system", "content": TEAM_PROMPT},
                                         {"role": "user", "content": "Hi"}]}
    pinned = chat_rewriter("base+rag", project.id)({"messages": [QUESTION[1]]})
    assert "refunded within 10 working days" in pinned["messages"][0]["content"]
    plain = {"model": "base", "messages": [QUESTION[1]]}
    assert chat_rewriter("", project.id)(plain) is plain
    # A variant on a route without messages to build is refused, not answered by the plain system.
    for path in ("/v1/completions", "/v1/responses"):
        with pytest.raises(Refused, match="answers chat completions only") as refused:
            chat_rewriter("", project.id)({"model": "base+rag", "prompt": "Hi"}, path)
        assert refused.value.status == 400
    assert chat_rewriter("", project.id)({"model": "base", "prompt": "Hi"}, "/v1/completions") == \
        {"model": "base", "prompt": "Hi"}


def test_the_command_line_shows_and_sets_the_team_prompt_and_top_k(tmp_path):
    import json

    from tests.helpers import cli

    ws = tmp_path / "ws"
    assert cli(ws, "init", "--no-demo").returncode == 0
    assert cli(ws, "projects", "--create", "docs").returncode == 0
    shown = cli(ws, "docs", "prompt", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"project": "docs", "team_prompt": "", "rag_top_k": 3}
    (tmp_path / "sheet.md").write_text("Call 105 for a power cut.\n")
    done = json.loads(cli(ws, "docs", "prompt", "--file", str(tmp_path / "sheet.md"), "--top-k", "4", "--json").stdout)
    assert done == {"project": "docs", "team_prompt": "Call 105 for a power cut.", "rag_top_k": 4}
    refused = cli(ws, "docs", "prompt", "--top-k", "50")
    assert refused.returncode == 1 and "between 1 and 20" in refused.stderr
