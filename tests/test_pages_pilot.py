"""The Pilot page under AppTest: agents see running pilots (a blind one names no system anywhere on the page),
rate an answer (escalate yes/no is required), and only reach the Pilot, Home and Account pages; engineers create
pilots; Results shows the escalation rate with its interval and sends escalations to annotation once."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from storage.models import Example, Pilot, PilotExchange
from tests.conftest import PASSWORD
from tests.helpers import page, rendered_text

NOW = datetime.now(timezone.utc)


@pytest.fixture
def agent(session, users):
    from core.accounts import create_user

    return create_user(session, users["admin"], "agent1", PASSWORD, "agent")


def _pilot(session, users, project, name, blind):
    from core.ship.pilots import create_pilot

    return create_pilot(session, users["engineer"], project.id, name=name, system="base", blind=blind,
                        starts_at=NOW - timedelta(days=1), ends_at=NOW + timedelta(days=20))


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_agents_reach_only_the_pilot_and_a_blind_pilot_names_no_system(session, users, project, agent):
    from ui.frame import visible_pages

    assert [p.title for p in visible_pages(agent)] == ["Home", "Pilot", "Account"]
    _pilot(session, users, project, "weeks 1-3", blind=True)
    at = _ok(page("pilot.py", agent).run())
    text = rendered_text(at)
    assert "weeks 1-3 (a hidden system (blind pilot))" in at.selectbox(key="pl_pilot").options
    assert "Base model" not in text and "base:" not in text and "Create a pilot" not in text
    assert "Your role cannot use this page" in _ok(page("results.py", agent).run()).error[0].value
    assert "Pilot page" in rendered_text(_ok(page("home.py", agent).run()))


def test_an_agent_rates_an_answer(session, users, project, agent):
    from core.ship.pilots import record_exchange

    pilot = _pilot(session, users, project, "open", blind=False)
    messages = [{"role": "user", "content": "My bill doubled, why?"}]
    ex = record_exchange(session, agent, pilot.id, conversation_id="c", turn_index=0, messages=messages,
                         answer="Check your meter.")
    at = page("pilot.py", agent)
    at.session_state["pl_chat"] = {"pilot": pilot.id, "project": project.id, "conversation": "c", "outbox": False,
                                   "turns": messages + [{"role": "assistant", "content": "Check your meter.",
                                                         "exchange_id": ex.id}]}
    _ok(at.run())
    assert "Base model" in at.selectbox(key="pl_pilot").options[0]
    next(r for r in at.radio if r.label == "Accuracy").set_value(2)
    next(b for b in at.button if b.label == "Save rating").click()
    _ok(at.run())
    assert "Say whether you would escalate this to a human." in [e.value for e in at.error]
    session.expire_all()
    assert session.get(PilotExchange, ex.id).escalate is None  # nothing saved without the escalation answer
    next(r for r in at.radio if r.label == "Accuracy").set_value(2)
    next(r for r in at.radio if r.label == "Would you escalate this to a human?").set_value("Yes")
    next(t for t in at.text_area if t.label == "Corrected answer (optional)").set_value("Your tariff changed.")
    next(b for b in at.button if b.label == "Save rating").click()
    _ok(at.run())
    session.expire_all()
    row = session.get(PilotExchange, ex.id)
    assert (row.ratings, row.escalate, row.correction) == ({"accuracy": 2}, True, "Your tariff changed.")
    assert any("Rated: accuracy 2; escalate: yes" in c.value for c in at.caption)


def test_engineers_create_pilots_and_read_them_on_results(session, users, project, agent):
    from core.ship.pilots import rate_exchange, record_exchange

    at = _ok(page("pilot.py", users["engineer"]).run())
    at.text_input[0].set_value("three weeks")
    at.checkbox[0].check()
    next(b for b in at.button if b.label == "Create pilot").click()
    _ok(at.run())
    pilot = session.exec(select(Pilot)).one()
    assert (pilot.name, pilot.blind, pilot.system.startswith("base:")) == ("three weeks", True, True)
    assert "three weeks (Base model" in at.selectbox(key="pl_pilot").options[0]  # engineers see the system

    for i, escalate in enumerate((True, False, False, False)):
        ex = record_exchange(session, agent, pilot.id, conversation_id=str(i), turn_index=0,
                             messages=[{"role": "user", "content": f"Question {i}?"}], answer="An answer.")
        rate_exchange(session, agent, ex.id, ratings={"accuracy": 4}, escalate=escalate)
    res = _ok(page("results.py", users["engineer"]).run())
    text = rendered_text(res)
    assert "25% (5%-70%)" in text and "4.00 (4.00 to 4.00)" in text and "Question 0?" in text
    next(b for b in res.button if b.label == "Send escalations and corrections to annotation").click()
    _ok(res.run())
    assert [m.value for m in res.success] == ["1 of 1 escalated or corrected answers sent to annotation as drafts; "
                                              "0 already sent and 0 already in the data were skipped."]
    draft = session.exec(select(Example).where(Example.source == "pilot")).one()
    assert f"#{draft.id}" in rendered_text(res)  # the escalated question now names its draft
    assert draft.origin["pilot"] == "three weeks" and draft.turns[0]["content"] == "Question 0?"
    next(b for b in res.button if b.label == "Send escalations and corrections to annotation").click()
    _ok(res.run())
    assert "0 of 1 escalated or corrected answers sent" in res.success[0].value and "1 already sent" in \
        res.success[0].value
