"""Pilots: the figures (pure), the agent role, exchanges and ratings, drafts for annotation (never twice), exports."""
import csv
import io
import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from tests.conftest import PASSWORD

NOW = datetime.now(timezone.utc)


def _wilson_reference(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval written out from its formula (Wilson 1927), independent of scipy."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 10), (9, 20), (45, 100), (28, 100), (5, 5)])
def test_wilson_matches_the_formula(k, n):
    from core.evaluate.stats import wilson

    got = wilson(k, n)
    lo, hi = _wilson_reference(k, n)
    assert got.value == pytest.approx(k / n) and got.n == n
    assert (got.lo, got.hi) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert math.isnan(wilson(0, 0).value)


def test_bootstrap_difference_sees_a_real_drop_and_not_noise():
    from core.evaluate.stats import bootstrap_difference

    before, after = [1] * 45 + [0] * 55, [1] * 28 + [0] * 72  # the case study: 45% -> 28%
    diff = bootstrap_difference(after, before)
    assert diff.value == pytest.approx(-0.17) and diff.lo < diff.value < diff.hi < 0
    same = bootstrap_difference([1, 0] * 20, [0, 1] * 20)
    assert same.value == 0 and same.lo < 0 < same.hi


def _row(escalate, acc, day=0):
    return {"escalate": escalate, "ratings": {"accuracy": acc}, "created_at": datetime(2026, 11, 30) + timedelta(day)}


def test_summary_counts_only_rated_answers_and_groups_weeks_by_monday():
    from core.ship.pilot_results import before_after_of, by_week, summarize

    rows = [_row(True, 2), _row(False, 4), _row(False, 5, day=7), {"escalate": None, "ratings": {}}]
    s = summarize(rows, ["accuracy"])
    assert (s["n"], s["escalated"]) == (3, 1) and s["escalation"].value == pytest.approx(1 / 3)
    assert s["means"]["accuracy"].value == pytest.approx(11 / 3)
    weeks = by_week(rows[:3], ["accuracy"])
    assert [(w["week"], w["n"], w["escalated"]) for w in weeks] == [("2026-11-30", 2, 1), ("2026-12-07", 1, 0)]
    ba = before_after_of(rows[:2], [_row(False, 5), _row(False, 5)], ["accuracy"])
    assert ba["escalation"].value == pytest.approx(-0.5) and ba["means"]["accuracy"].value == pytest.approx(2.0)


@pytest.fixture
def agents(session, users):
    from core.accounts import create_user

    return [create_user(session, users["admin"], f"agent{i}", PASSWORD, "agent") for i in (1, 2)]


def _pilot(session, engineer, project, name="weeks 1-3", blind=False, system="base", days=(-1, 20)):
    from core.ship.pilots import create_pilot

    return create_pilot(session, engineer, project.id, name=name, system=system, starts_at=NOW + timedelta(days[0]),
                        ends_at=NOW + timedelta(days[1]), blind=blind)


def _exchange(session, agent, pilot, question="My bill doubled, why?", answer="Check the meter."):
    from core.ship.pilots import record_exchange

    return record_exchange(session, agent, pilot.id, conversation_id="c1", turn_index=0,
                           messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": question}],
                           answer=answer, completion_id=f"chatcmpl-{question[:10]}")


def test_agents_pilot_and_nothing_else(session, users, project, agents):
    from core.accounts import can
    from core.errors import PermissionDenied
    from core.ship.pilots import HIDDEN, active_pilots, pilot_system

    agent = agents[0]
    assert can(agent, "pilot") and not any(can(agent, a) for a in ("curate", "score", "evaluate", "train"))
    assert all(can(users[r], "pilot") for r in ("annotator", "reviewer", "engineer", "admin"))
    with pytest.raises(PermissionDenied):
        _pilot(session, agent, project)
    _pilot(session, users["engineer"], project, name="blind one", blind=True)
    _pilot(session, users["engineer"], project, name="open one")
    _pilot(session, users["engineer"], project, name="ended", days=(-30, -2))
    seen = {p["name"]: p["system_label"] for p in active_pilots(session, agent, project.id)}
    assert seen["blind one"] == HIDDEN and "Base model" in seen["open one"] and "ended" not in seen
    assert "Base model" in {p["name"]: p["system_label"] for p in active_pilots(session, users["engineer"],
                                                                               project.id)}["blind one"]
    assert pilot_system(session, agent, next(p["id"] for p in active_pilots(session, agent, project.id))) \
        .startswith("base:")


def test_pilot_creation_refuses_bad_input(session, users, project):
    from core.errors import InvalidInput, NotFound

    eng = users["engineer"]
    _pilot(session, eng, project)
    for kwargs in ({"name": "weeks 1-3"}, {"name": "x", "days": (3, 1)}, {"name": ""},
                   {"name": "y", "system": "bogus"}):
        with pytest.raises(InvalidInput):
            _pilot(session, eng, project, **kwargs)
    with pytest.raises(NotFound):
        _pilot(session, eng, project, name="z", system="run:999")
    with pytest.raises(InvalidInput, match="pilot its plain system"):  # was created, serving plain base
        _pilot(session, eng, project, name="v", system="base+rag")


def test_ratings_are_checked_and_only_the_asker_rates(session, users, project, agents):
    from core.errors import InvalidInput, PermissionDenied
    from core.ship.pilots import rate_exchange

    pilot = _pilot(session, users["engineer"], project)
    ex = _exchange(session, agents[0], pilot)
    for bad in ({"accuracy": 6}, {"accuracy": "4"}, {"speed": 3}, {"accuracy": True}):
        with pytest.raises(InvalidInput):
            rate_exchange(session, agents[0], ex.id, ratings=bad, escalate=False)
    with pytest.raises(InvalidInput):
        rate_exchange(session, agents[0], ex.id, ratings={"accuracy": 3}, escalate="yes")
    with pytest.raises(PermissionDenied):
        rate_exchange(session, agents[1], ex.id, ratings={"accuracy": 3}, escalate=False)
    row = rate_exchange(session, agents[0], ex.id, ratings={"accuracy": 2, "tone": 4}, escalate=True,
                        correction="  Your tariff changed in May.  ")
    assert (row.ratings, row.escalate) == ({"accuracy": 2, "tone": 4}, True)
    assert row.correction == "Your tariff changed in May."


def _rated_pilot(session, users, project, agents):
    from core.ship.pilots import rate_exchange

    pilot = _pilot(session, users["engineer"], project)
    a = _exchange(session, agents[0], pilot, "Why did my bill double?")
    b = _exchange(session, agents[1], pilot, "Can I pay in instalments?", "Yes.")
    c = _exchange(session, agents[1], pilot, "Where is my meter?", "Outside.")
    rate_exchange(session, agents[0], a.id, ratings={"accuracy": 1}, escalate=True)
    rate_exchange(session, agents[1], b.id, ratings={"accuracy": 3}, escalate=False, correction="Yes: up to 12 months.")
    rate_exchange(session, agents[1], c.id, ratings={"accuracy": 5}, escalate=False)
    return pilot, (a, b, c)


def test_escalations_and_corrections_become_drafts_once_with_their_origin(session, users, project, agents):
    from core.curate.origins import describe, sees_systems
    from core.ship.pilot_results import escalated_questions, send_to_annotation
    from storage.models import Example

    pilot, (a, b, _) = _rated_pilot(session, users, project, agents)
    eng = users["engineer"]
    out = send_to_annotation(session, eng, project.id)
    assert (out["candidates"], out["sent"], out["already_sent"]) == (2, 2, 0)
    again = send_to_annotation(session, eng, project.id)
    assert (again["sent"], again["already_sent"]) == (0, 2)
    drafts = {e.origin["exchange_id"]: e for e in session.exec(select(Example).where(Example.source == "pilot"))}
    assert set(drafts) == {a.id, b.id}
    esc, corr = drafts[a.id], drafts[b.id]
    assert esc.status == "draft" and esc.turns[-1] == {"role": "assistant", "content": ""} and esc.system == "Be kind."
    assert corr.turns[-1]["content"] == "Yes: up to 12 months."
    line = describe("pilot", esc.origin, blind=not sees_systems(users["annotator"], esc.origin))
    assert line.startswith(f"From pilot {pilot.name} of base:") and "would escalate it to a human" in line
    assert "the draft started from an empty answer" in line
    listed = escalated_questions(session, eng, project.id)
    assert [(r["question"], r["sent_example_id"]) for r in listed] == [("Why did my bill double?", esc.id)]


def test_blind_pilot_draft_hides_the_system_below_engineer(session, users, project, agents):
    from core.curate.origins import describe, sees_systems
    from core.ship.pilot_results import send_to_annotation
    from core.ship.pilots import rate_exchange
    from storage.models import Example

    pilot = _pilot(session, users["engineer"], project, name="blind", blind=True)
    ex = _exchange(session, agents[0], pilot)
    rate_exchange(session, agents[0], ex.id, ratings={}, escalate=True)
    send_to_annotation(session, users["engineer"], project.id)
    draft = session.get(Example, session.get(type(ex), ex.id).sent_example_id)
    annotator_line = describe("pilot", draft.origin, blind=not sees_systems(users["annotator"], draft.origin))
    assert "base" not in annotator_line and "From pilot blind, exchange" in annotator_line
    assert "base:" in describe("pilot", draft.origin, blind=not sees_systems(users["engineer"], draft.origin))


def test_figures_before_after_and_exports(session, users, project, agents):
    from core.ship.pilot_results import before_after, export_exchanges, pilot_figures
    from core.ship.pilots import rate_exchange

    first, _ = _rated_pilot(session, users, project, agents)
    second = _pilot(session, users["engineer"], project, name="after")
    for q in ("One?", "Two?"):
        rate_exchange(session, agents[0], _exchange(session, agents[0], second, q).id, ratings={"accuracy": 4},
                      escalate=False)
    eng = users["engineer"]
    figures = pilot_figures(session, eng, project.id)
    by_pilot = {f["pilot"].name: f for f in figures["by_pilot"]}
    assert by_pilot["weeks 1-3"]["escalation"].value == pytest.approx(1 / 3)
    assert by_pilot["weeks 1-3"]["means"]["accuracy"].value == pytest.approx(3.0)
    (system,) = figures["by_system"]  # both pilot the base model
    assert (system["n"], system["escalated"]) == (5, 1) and system["weeks"]
    diff = before_after(session, eng, first.id, second.id)
    assert diff["escalation"].value == pytest.approx(-1 / 3) and diff["means"]["accuracy"].value == pytest.approx(1)
    name, data = export_exchanges(session, eng, project.id, "jsonl")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert name.endswith(".jsonl") and len(records) == 5
    assert records[0]["messages"][-1]["content"] == "Why did my bill double?" and records[0]["agent"] == "agent1"
    name, data = export_exchanges(session, eng, project.id, "csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == 5 and rows[1]["correction"] == "Yes: up to 12 months." and rows[1]["accuracy"] == "3"


def test_csv_export_is_formula_safe(session, users, project, agents):
    from core.ship.pilot_results import export_exchanges

    pilot = _pilot(session, users["engineer"], project)
    _exchange(session, agents[0], pilot, question="=HYPERLINK(\"http://x\")")
    _, data = export_exchanges(session, users["engineer"], project.id, "csv")
    row = next(csv.DictReader(io.StringIO(data.decode())))
    assert row["question"].startswith("'=")


def test_feedback_by_completion_id(session, users, project, agents):
    from core.errors import InvalidInput, NotFound
    from core.ship.pilots import record_served, served_feedback

    pilot = _pilot(session, users["engineer"], project)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bill?"}]
    row = record_served(session, pilot.id, client="desk", conversation_id="x", messages=msgs, answer="Sure.",
                        completion_id="abc")
    assert row.turn_index == 1 and row.user_id is None
    with pytest.raises(NotFound):
        served_feedback(session, pilot.id, {"completion_id": "nope", "ratings": {}, "escalate": True})
    for bad in ({"completion_id": "abc", "escalate": True}, {"completion_id": "abc", "ratings": {}, "escalate": 1},
                {"completion_id": "abc", "ratings": {}, "escalate": True, "extra": 1}, []):
        with pytest.raises(InvalidInput):
            served_feedback(session, pilot.id, bad)
    done = served_feedback(session, pilot.id, {"completion_id": "abc", "ratings": {"tone": 5}, "escalate": True})
    assert done.escalate is True and done.ratings == {"tone": 5}


def test_agents_start_only_the_shared_endpoint_and_the_cli_adds_agents(session, users, project, agents, workspace):
    from core.errors import InvalidInput, PermissionDenied
    from core.ship.serving import ServeConfig, launch_server, playground_server
    from tests.helpers import cli

    with pytest.raises(InvalidInput):  # a pinned endpoint, or one on another interface, stays an engineer's
        launch_server(session, agents[0], project.id, ServeConfig(system="base"), action="pilot")
    with pytest.raises(PermissionDenied):
        playground_server(session, agents[0], project.id)  # the Playground's own door: engineers only
    added = cli(workspace, "users", "add", "desk", "--role", "agent", "--password", PASSWORD)
    assert added.returncode == 0, added.stderr
