"""What a pilot measured, for engineers: escalation rate (Wilson interval) and rubric means (bootstrap interval)
per system, per pilot and by week; the before/after of two pilots (differences with bootstrap intervals); the
questions that escalated; drafts for annotation; and every exchange as JSONL or CSV.

``summarize`` and ``before_after_of`` are pure (plain dicts in, figures out); the rest read the database. Only
rated exchanges count in the figures (an answer nobody rated has no escalation to count). Corrections and
escalated questions go to annotation as drafts (source ``pilot``) whose ``origin`` says which pilot and exchange;
an exchange remembers its draft, so a second send skips it and counts it.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any
from datetime import timedelta

from sqlmodel import Session, select

from core.accounts import require
from core.curate.curation import create_example
from core.curate.dedup import content_hash
from core.curate.formats.writers import csv_safe_cell
from core.errors import InvalidInput
from core.evaluate.review import rubric_of
from core.evaluate.stats import bootstrap_difference, bootstrap_mean, wilson
from core.ship.pilots import _aware, get_pilot, list_pilots, system_label
from storage.models import Example, Pilot, PilotExchange, Project, User, json_default

SOURCE = "pilot"
EXPORT_FORMATS = ("jsonl", "csv")
FIELDS = ("id", "pilot_id", "pilot", "system", "agent", "client", "conversation_id", "turn_index", "question",
          "answer", "completion_id", "escalate", "correction", "sent_example_id", "created_at", "rated_at")


def summarize(rows: list[dict], criteria: list[str]) -> dict:
    """Figures of rated exchanges (``{"escalate": bool, "ratings": {criterion: score}}``): ``n``, ``escalated``,
    ``escalation`` (a rate with its Wilson interval) and ``means`` (criterion -> mean with a bootstrap interval)."""
    rated = [r for r in rows if r.get("escalate") is not None]
    escalated = sum(1 for r in rated if r["escalate"])
    return {"n": len(rated), "escalated": escalated, "escalation": wilson(escalated, len(rated)),
            "means": {c: bootstrap_mean([r["ratings"][c] for r in rated if c in (r.get("ratings") or {})])
                      for c in criteria}}


def week_of(row: dict) -> str:
    """The ISO week an exchange was made in, named by its Monday ("2026-11-30")."""
    day = _aware(row["created_at"]).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def by_week(rows: list[dict], criteria: list[str]) -> list[dict]:
    weeks: dict[str, list[dict]] = {}
    for row in rows:
        weeks.setdefault(week_of(row), []).append(row)
    return [{"week": week, **summarize(items, criteria)} for week, items in sorted(weeks.items())]


def before_after_of(before: list[dict], after: list[dict], criteria: list[str]) -> dict:
    """``after`` minus ``before``: the escalation rate's difference and each criterion mean's difference, with
    bootstrap intervals (a negative escalation difference is fewer escalations)."""
    def rated(rows):
        return [r for r in rows if r.get("escalate") is not None]

    b, a = rated(before), rated(after)
    return {"before": summarize(b, criteria), "after": summarize(a, criteria),
            "escalation": bootstrap_difference([float(r["escalate"]) for r in a], [float(r["escalate"]) for r in b]),
            "means": {c: bootstrap_difference([r["ratings"][c] for r in a if c in r["ratings"]],
                                              [r["ratings"][c] for r in b if c in r["ratings"]]) for c in criteria}}


def _criteria(session: Session, project_id: int) -> list[str]:
    return [c["name"] for c in rubric_of(session.get(Project, project_id))]


def _rows(session: Session, pilot_ids: list[int]) -> list[dict]:
    if not pilot_ids:
        return []
    exchanges = session.exec(select(PilotExchange).where(PilotExchange.pilot_id.in_(pilot_ids))
                             .order_by(PilotExchange.id))
    return [r.model_dump() for r in exchanges]


def pilot_figures(session: Session, user: User, project_id: int) -> dict:
    """Per system (``by_system``: label -> figures and weeks) and per pilot (``by_pilot``), and ``criteria``."""
    pilots = list_pilots(session, user, project_id)
    criteria = _criteria(session, project_id)
    rows = _rows(session, [p.id for p in pilots])
    by_pilot: list[dict] = []
    by_system: dict[str, list] = {}
    for pilot in reversed(pilots):
        mine = [r for r in rows if r["pilot_id"] == pilot.id]
        label = system_label(session, user, pilot)
        by_pilot.append({"pilot": pilot, "system_label": label, "exchanges": len(mine),
                         **summarize(mine, criteria)})
        by_system.setdefault(label, []).extend(mine)
    return {"criteria": criteria, "by_pilot": by_pilot,
            "by_system": [{"system_label": label, "exchanges": len(items), **summarize(items, criteria),
                           "weeks": by_week([r for r in items if r.get("escalate") is not None], criteria)}
                          for label, items in by_system.items()]}


def before_after(session: Session, user: User, before_id: int, after_id: int) -> dict:
    """The before/after of two pilots of one project (``before_after_of`` on their rated exchanges)."""
    require(user, "evaluate")
    before, after = get_pilot(session, before_id), get_pilot(session, after_id)
    if before.project_id != after.project_id:
        raise InvalidInput("Compare two pilots of the same project.")
    if before.id == after.id:
        raise InvalidInput("Choose two different pilots to compare.")
    criteria = _criteria(session, before.project_id)
    return {"before_pilot": before, "after_pilot": after,
            **before_after_of(_rows(session, [before.id]), _rows(session, [after.id]), criteria)}


def _question(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def escalated_questions(session: Session, user: User, project_id: int) -> list[dict]:
    """Every exchange an agent would escalate, newest first: pilot, question, answer, correction, draft."""
    pilots = {p.id: p for p in list_pilots(session, user, project_id)}
    rows = session.exec(select(PilotExchange).where(PilotExchange.pilot_id.in_(list(pilots)),
                                                    PilotExchange.escalate == True)  # noqa: E712
                        .order_by(PilotExchange.id.desc()))
    return [{"id": r.id, "pilot": pilots[r.pilot_id].name, "question": _question(r.messages), "answer": r.answer,
             "correction": r.correction, "sent_example_id": r.sent_example_id} for r in rows]


def _to_send(session: Session, pilot_ids: list[int]) -> list[PilotExchange]:
    rows = session.exec(select(PilotExchange).where(PilotExchange.pilot_id.in_(pilot_ids)).order_by(PilotExchange.id))
    return [r for r in rows if r.escalate or r.correction.strip()]


def send_to_annotation(session: Session, user: User, project_id: int) -> dict:
    """Each corrected or escalated exchange of the project's pilots as a draft example: the conversation up to the
    question, then the agent's correction (or an empty answer to write). Returns ``candidates``, ``sent`` (ids in
    ``example_ids``), ``already_sent`` (skipped: sent before) and ``duplicate_text`` (the project already holds
    this text: skipped)."""
    pilots = {p.id: p for p in list_pilots(session, user, project_id)}
    project = session.get(Project, project_id)
    candidates = _to_send(session, list(pilots))
    report: dict[str, Any] = {"candidates": len(candidates), "sent": 0, "already_sent": 0, "duplicate_text": 0,
                              "example_ids": []}
    for row in candidates:
        if row.sent_example_id is not None:
            report["already_sent"] += 1
            continue
        system = "\n".join(m["content"] for m in row.messages if m["role"] == "system")
        start = "correction" if row.correction.strip() else "empty"
        turns = [m for m in row.messages if m["role"] in ("user", "assistant")]
        turns = turns + [{"role": "assistant", "content": row.correction.strip()}]
        if session.exec(select(Example.id).where(Example.project_id == project_id,
                                                 Example.content_hash == content_hash(system, turns))).first():
            report["duplicate_text"] += 1
            continue
        pilot = pilots[row.pilot_id]
        origin = {"kind": SOURCE, "pilot_id": pilot.id, "pilot": pilot.name, "pilot_blind": pilot.blind,
                  "system": pilot.system, "exchange_id": row.id, "escalated": bool(row.escalate),
                  "ratings": row.ratings, "start": start}
        note = (f"From pilot {pilot.name}, exchange {row.id}: "
                + ("an agent would escalate this question to a human. " if row.escalate else "")
                + ("It starts from the agent's corrected answer; check it." if start == "correction"
                   else "Write the answer."))
        example = create_example(session, user, project, system=system, turns=turns, note=note, source=SOURCE,
                                 origin=origin, answer_to_write=start == "empty")
        row.sent_example_id = example.id
        session.add(row)
        session.commit()
        report["sent"] += 1
        report["example_ids"].append(example.id)
    return report


def export_exchanges(session: Session, user: User, project_id: int, fmt: str) -> tuple[str, bytes]:
    """Every exchange of the project's pilots as (file name, bytes): one JSON object a line (``jsonl``, with the
    messages) or CSV (the formula-safe cells of core.curate.formats.writers; ratings a column per criterion)."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"Choose an export format: {', '.join(EXPORT_FORMATS)}.")
    pilots = {p.id: p for p in list_pilots(session, user, project_id)}
    criteria = _criteria(session, project_id)
    names = {u.id: u.username for u in session.exec(select(User))}
    records = []
    for row in _rows(session, list(pilots)):
        pilot: Pilot = pilots[row["pilot_id"]]
        records.append({**{k: row.get(k) for k in FIELDS}, "pilot": pilot.name, "system": pilot.system,
                        "agent": names.get(row["user_id"], ""), "question": _question(row["messages"]),
                        "ratings": row["ratings"], "messages": row["messages"]})
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False, default=json_default) + "\n" for r in records)
        return "pilot-exchanges.jsonl", text.encode("utf-8")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(FIELDS) + criteria)
    writer.writeheader()
    for r in records:
        cells = {k: r[k] for k in FIELDS} | {c: r["ratings"].get(c, "") for c in criteria}
        writer.writerow({k: csv_safe_cell(json_default(v) if hasattr(v, "isoformat") else v)
                         for k, v in cells.items()})
    return "pilot-exchanges.csv", out.getvalue().encode("utf-8")
