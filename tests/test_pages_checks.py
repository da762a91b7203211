"""Checks on the pages: Generate edits a prompt's checks and makes them from the facts; Results shows pass rates and
the failing answers."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.evaluate import checkstore, evalsets
from storage.models import Output

ROOT = Path(__file__).resolve().parents[1]


def page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def widget(items, label):
    return next(w for w in items if w.label == label)


def _eval_set(session, project, engineer):
    lines = "\n".join(json.dumps(r) for r in [
        {"prompt": "Power cut on my street", "reference": "Call 0800 555 0105.", "must_contain": "0800 555 0105"},
        {"prompt": "How do I read my meter?", "reference": "Send it at brightwater-energy.example/readings."}])
    return evalsets.create_eval_set_from_file(session, engineer, project.id, "checked", lines, "p.jsonl")


def _checks(session, es_id):
    session.expire_all()
    return [p.checks for p in evalsets.eval_prompts(session, es_id)]


def test_generate_adds_and_removes_a_prompts_checks(session, project, users):
    es = _eval_set(session, project, users["engineer"])
    at = page("generate.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "1 of 2 prompts have checks (1 checks)." in [t.value for t in at.text]
    at.selectbox(key="checks_prompt").set_value(evalsets.eval_prompts(session, es.id)[1].id).run()
    widget(at.text_input, "Terms or pattern").set_value("brightwater-energy.example/readings | 0800 555 0101")
    widget(at.button, "Add check").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert _checks(session, es.id)[1] == [{"kind": "contains", "values": ["brightwater-energy.example/readings",
                                                                          "0800 555 0101"], "match": "any",
                                           "source": "expert"}]
    # A bad regular expression is refused with the reason, and the saved checks stay.
    widget(at.selectbox, "Kind").set_value("regex")
    widget(at.text_input, "Terms or pattern").set_value("(readings")
    widget(at.button, "Add check").click().run()
    assert any("not a valid regular expression" in e.value for e in at.error)
    assert len(_checks(session, es.id)[1]) == 1
    widget(at.selectbox, "Kind").set_value("length")
    widget(at.number_input, "At most").set_value(80)
    widget(at.button, "Add check").click().run()
    assert _checks(session, es.id)[1][-1] == {"kind": "length", "max": 80, "unit": "words", "source": "expert"}
    widget(at.button, "Remove check").click().run()  # the first one
    assert [c["kind"] for c in _checks(session, es.id)[1]] == ["length"]


def test_generate_makes_checks_from_the_projects_facts(session, project, users):
    es = _eval_set(session, project, users["engineer"])
    checkstore.set_project_facts(session, users["engineer"], project.id,
                                 [{"name": "readings_page", "keywords": ["brightwater-energy.example/readings"]}])
    at = page("generate.py", users["engineer"]).run()
    widget(at.button, "Add checks from the facts").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "1 fact checks on 1 prompts." in [s.value for s in at.success]
    assert _checks(session, es.id)[1] == [{"kind": "contains", "values": ["brightwater-energy.example/readings"],
                                           "match": "all", "name": "readings_page", "source": "fact"}]


def test_results_show_pass_rates_and_failing_answers(session, project, users):
    es = _eval_set(session, project, users["engineer"])
    prompt = evalsets.eval_prompts(session, es.id)[0]
    session.add(Output(prompt_id=prompt.id, system="base", text="No idea, sorry.", decoding={}))
    session.commit()
    at = page("results.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Automatic checks" in [h.value for h in at.subheader]
    tables = [df.value for df in at.dataframe]
    summary = next(t for t in tables if "prompts passing every check" in t.columns)
    assert summary.iloc[0]["system"] == "base model"
    assert summary.iloc[0]["pass rate"] == 0 and summary.iloc[0]["checked prompts"] == 1
    failing = next(t for t in tables if "answer" in t.columns)
    assert failing.iloc[0]["answer"] == "No idea, sorry." and failing.iloc[0]["check"] == "contains: 0800 555 0105"
