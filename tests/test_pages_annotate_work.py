"""AppTest of the Annotate page never losing or misplacing work: the editor is there at once while the base
model's tokenizer loads, typed text survives moving away and a filter change, an unchanged save writes no new
version, a reload (the URL) comes back to the same example and filters, and sent-back drafts say where they
came from in words."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import basemodel
from core.curate import curation as cur
from core.curate import tokencount
from storage.models import Example, ExampleRevision
from tests.helpers import area, click, heading

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [("How do I read my meter?", "Note the digits left to right."),
             ("Can I get paper bills?", "Yes, ask us by phone."),
             ("Why did my bill double?", "Check the meter reading first.")]


def app(user, project, query: dict | None = None, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages/annotate.py"), default_timeout=timeout)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    at.query_params.update(query or {})
    return at.run()


def drafts(session, users, project):
    return [cur.create_example(session, users["annotator"], project,
                               turns=[{"role": "user", "content": q}, {"role": "assistant", "content": a}])
            for q, a in QUESTIONS]


def hints_line(at) -> str:
    return next(json.loads(el.proto.json) for el in at.get("bidi_component")
                if el.proto.component_name == "fts_live_hints")["line"]


@pytest.fixture
def fresh_counter(monkeypatch):
    """A server process whose tokenizer has not loaded yet, and a base model that takes until ``release``."""
    release = threading.Event()
    real = basemodel.load_tokenizer

    def slow_tokenizer(*args, **kwargs):
        release.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(basemodel, "load_tokenizer", slow_tokenizer)
    monkeypatch.setattr(tokencount, "_shared", tokencount.BackgroundCounter(cur.default_token_counter))
    yield release
    release.set()


@pytest.mark.slow
def test_the_editor_is_there_while_the_tokenizer_loads_then_the_count_is_exact(session, users, project,
                                                                               fresh_counter):
    a, _, _ = drafts(session, users, project)
    at = app(users["annotator"], project, timeout=20)  # a page waiting on the tokenizer would time out here
    assert not at.exception
    assert area(at, "Response").value == QUESTIONS[0][1]
    assert "estimated from word count while the base model's tokenizer loads" in hints_line(at)
    fresh_counter.set()
    assert tokencount.shared_counter().wait(timeout=600)
    at.run()
    assert "estimated" not in hints_line(at) or "unavailable" in hints_line(at)  # exact, or says why not


def test_every_shortcut_sends_the_typed_text_first(session, users, project):
    drafts(session, users, project)
    at = app(users["annotator"], project)
    guard = next(json.loads(el.proto.json) for el in at.get("bidi_component")
                 if el.proto.component_name == "fts_commit_before_shortcuts")
    assert sorted(guard["combos"]) == ["alt+left", "alt+right", "ctrl+enter", "ctrl+shift+enter"]


def test_an_edit_survives_a_filter_change_and_an_unchanged_save_writes_no_version(session, users, project):
    a, b, _ = drafts(session, users, project)
    at = app(users["annotator"], project)
    area(at, "Response").set_value("Note every digit, left to right, black ones only.")
    at.text_input(key="q_search").set_value("paper").run()  # the filter hides #a: its edit is kept
    assert heading(at) == f"Example #{b.id} · draft"
    assert f"Unsaved edits kept for #{a.id}" in " ".join(c.value for c in at.caption)
    click(at, "Save & next")  # nothing typed on #b: nothing to save
    assert f"No changes to save on #{b.id} (still version 1)." in " ".join(at.session_state["_flash"])
    at.text_input(key="q_search").set_value("").run()
    at.radio[0].set_value(a.id).run()
    assert heading(at) == f"Example #{a.id} · draft · unsaved changes"
    assert area(at, "Response").value == "Note every digit, left to right, black ones only."
    click(at, "Save & next")
    session.expire_all()
    assert session.get(Example, a.id).version == 2 and session.get(Example, b.id).version == 1
    assert session.get(Example, a.id).turns[1]["content"] == "Note every digit, left to right, black ones only."


def test_saving_the_same_text_again_is_a_no_op(session, users, project):
    a, _, _ = drafts(session, users, project)
    ann = users["annotator"]
    same = cur.save_example(session, ann, a.id, expected_version=1, system=a.system, turns=a.turns,
                            tags=a.tags, note=a.note)
    assert same.version == 1
    assert len(session.exec(ExampleRevision.__table__.select().where(
        ExampleRevision.example_id == a.id)).all()) == 1
    submitted = cur.save_example(session, ann, a.id, expected_version=1, system=a.system, turns=a.turns,
                                 submit=True)
    assert (submitted.version, submitted.status) == (2, "submitted")


def test_a_reload_comes_back_to_the_open_example_and_the_filters(session, users, project):
    a, b, c = drafts(session, users, project)
    at = app(users["annotator"], project)
    at.text_input(key="q_search").set_value("bill").run()
    click(at, "Skip")
    assert heading(at) == f"Example #{c.id} · draft"
    assert at.query_params == {"search": "bill", "example": str(c.id)}

    reloaded = app(users["annotator"], project, query=dict(at.query_params))  # F5: a new session, same URL
    assert heading(reloaded) == f"Example #{c.id} · draft"
    assert reloaded.text_input(key="q_search").value == "bill"

    hostile = app(users["annotator"], project, query={"example": "99999", "status": "draft,nonsense",
                                                      "annotator": "x", "tag": "<b>"})
    assert not hostile.exception
    assert heading(hostile) == f"Example #{a.id} · draft"
    assert hostile.multiselect(key="q_status").value == ["draft"]


def test_sent_back_drafts_say_where_they_came_from_in_words(session, users, project):
    origin = {"kind": "eval_failure", "eval_set": "billing-v1", "eval_set_id": 1, "prompt_id": 17, "position": 0,
              "run": "run:2", "run_label": "run 2: lora-r16", "rule": "either",
              "caught": ["lost_to_base", "low_score: accuracy 1.5 <= 2"], "start": "base", "comments": []}
    ex = cur.create_example(session, users["annotator"], project, source="eval_failure", origin=origin,
                            turns=[{"role": "user", "content": "Why is my bill high?"},
                                   {"role": "assistant", "content": "Because of usage."}],
                            note="A long note.\nWith a second line the annotator must see.")
    at = app(users["engineer"], project)
    shown = "\n".join(str(t.value) for t in at.text)
    assert ("A failure of run 2: lora-r16 on the Results page: eval set billing-v1, prompt 1: lost to the base "
            "model (reviewers' majority preference); mean accuracy score 1.5, at or below 2; the draft started "
            "from the base model's answer.") in shown
    assert "lost_to_base" not in shown and "run run" not in shown
    # Below engineer the review is still blind: the same draft names no run, no score and not its start.
    at = app(users["annotator"], project)
    shown = "\n".join(str(t.value) for t in at.text)
    assert "A failure found on the Results page: eval set billing-v1, prompt 1." in shown
    assert not any(word in shown for word in ("lora-r16", "run 2", "accuracy", "base model")), shown
    assert area(at, "Note").value == "A long note.\nWith a second line the annotator must see."
    assert heading(at) == f"Example #{ex.id} · draft"
