"""Pilots: support agents try a system (base, run or export) on customers' questions for a time window and rate
each answer with the project's rubric, "would escalate to a human" yes/no and, optionally, a corrected answer.

Engineers and admins create pilots (``create_pilot``); agents (and every role above) pick an active one
(``active_pilots``), ask through the Playground's endpoint and record each exchange (``record_exchange``), then
rate it (``rate_exchange``). A chat front end reports into the same pilot through ``serve-model --pilot ID``: the
server records each answer under its completion id (``record_served``) and ``POST /v1/feedback`` attaches the
agent's ratings (``served_feedback``). A blind pilot never names its system to anyone below engineer.
Figures, annotation drafts and exports: core.ship.pilot_results.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Session, select

from core.accounts import can, require
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.evaluate.review import rubric_of
from core.names import check_name
from core.ship.systems import project_systems, resolve
from core.systems import SystemKey
from storage.models import Pilot, PilotExchange, Project, User, utcnow

HIDDEN = "a hidden system (blind pilot)"
MAX_CORRECTION_CHARS = 20_000


def _aware(when: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every stored one is UTC."""
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def is_active(pilot: Pilot, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return _aware(pilot.starts_at) <= now < _aware(pilot.ends_at)


def system_label(session: Session, user: User, pilot: Pilot) -> str:
    """The pilot's system in words, or HIDDEN for a blind pilot and a user below engineer."""
    if pilot.blind and not can(user, "evaluate"):
        return HIDDEN
    try:
        return resolve(session, pilot.system).label
    except (InvalidInput, NotFound):
        return pilot.system


def create_pilot(session: Session, user: User, project_id: int, *, name: str, system: str, starts_at: datetime,
                 ends_at: datetime, blind: bool = False) -> Pilot:
    """A pilot of ``system`` (a key the Playground offers for this project) from ``starts_at`` to ``ends_at``."""
    require(user, "evaluate")
    name = check_name(name, "pilot")
    if session.get(Project, project_id) is None:
        raise NotFound(f"Project {project_id} does not exist.")
    keys = {s.key for s in project_systems(session, project_id)}
    if SystemKey.parse(system).variant:  # resolve() would serve the plain system and drop the variant unsaid
        raise InvalidInput(f"A pilot serves a system as it is: {system} is a +prompt/+rag variant; pilot its plain "
                           "system, or put the team prompt in the project's default system prompt.")
    key = resolve(session, system).key
    if key not in keys:
        raise InvalidInput(f"{system} is not a system of this project: choose a base model, a finished run or a "
                           f"merged export.")
    starts_at, ends_at = _aware(starts_at), _aware(ends_at)
    if ends_at <= starts_at:
        raise InvalidInput("A pilot must end after it starts.")
    if session.exec(select(Pilot.id).where(Pilot.project_id == project_id, Pilot.name == name)).first():
        raise InvalidInput(f"A pilot named {name!r} already exists in this project.")
    pilot = Pilot(project_id=project_id, name=name, system=key, starts_at=starts_at, ends_at=ends_at,
                  blind=bool(blind), created_by=user.id)
    session.add(pilot)
    session.commit()
    session.refresh(pilot)
    return pilot


def get_pilot(session: Session, pilot_id: int) -> Pilot:
    pilot = session.get(Pilot, int(pilot_id))
    if pilot is None:
        raise NotFound(f"No pilot {pilot_id}.")
    return pilot


def list_pilots(session: Session, user: User, project_id: int) -> list[Pilot]:
    """Every pilot of the project, newest first (engineers and up: they see the systems)."""
    require(user, "evaluate")
    return list(session.exec(select(Pilot).where(Pilot.project_id == project_id).order_by(Pilot.id.desc())))


def active_pilots(session: Session, user: User, project_id: int) -> list[dict]:
    """The pilots an agent can take part in now: ``{"id", "name", "system_label", "ends_at"}``; a blind pilot's
    label is HIDDEN below engineer (the system key stays on the server: ``pilot_system``)."""
    require(user, "pilot")
    rows = session.exec(select(Pilot).where(Pilot.project_id == project_id).order_by(Pilot.id))
    return [{"id": p.id, "name": p.name, "system_label": system_label(session, user, p), "ends_at": p.ends_at}
            for p in rows if is_active(p)]


def pilot_system(session: Session, user: User, pilot_id: int) -> str:
    """The system key to ask, for the page's generation only (never shown: a blind pilot hides it)."""
    require(user, "pilot")
    pilot = get_pilot(session, pilot_id)
    if not is_active(pilot):
        raise InvalidInput(f"Pilot {pilot.name!r} is not running now.")
    return pilot.system


def record_exchange(session: Session, user: User, pilot_id: int, *, conversation_id: str, turn_index: int,
                    messages: list[dict], answer: str, completion_id: str | None = None) -> PilotExchange:
    """One answer the agent got on the Pilot page: the messages the model saw and its answer (not yet rated)."""
    require(user, "pilot")
    pilot = get_pilot(session, pilot_id)
    if not is_active(pilot):
        raise InvalidInput(f"Pilot {pilot.name!r} is not running now: its window is "
                           f"{_aware(pilot.starts_at):%Y-%m-%d %H:%M} to {_aware(pilot.ends_at):%Y-%m-%d %H:%M} UTC.")
    return _insert(session, pilot.id, user_id=user.id, client="", conversation_id=conversation_id,
                   turn_index=turn_index, messages=messages, answer=answer, completion_id=completion_id)


def _insert(session: Session, pilot_id: int, **values) -> PilotExchange:
    messages = [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in values["messages"]]
    if not any(m["role"] == "user" for m in messages):
        raise InvalidInput("An exchange needs the customer's question.")
    row = PilotExchange(pilot_id=pilot_id, **{**values, "messages": messages,
                                              "conversation_id": str(values["conversation_id"])[:64]})
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def record_served(session: Session, pilot_id: int, *, client: str, conversation_id: str, messages: list[dict],
                  answer: str, completion_id: str) -> PilotExchange:
    """One answer serve-model --pilot gave a chat front end (the launch was the engineer's opt-in)."""
    turn = sum(1 for m in messages if m.get("role") == "user") - 1
    return _insert(session, get_pilot(session, pilot_id).id, user_id=None, client=client[:200],
                   conversation_id=conversation_id, turn_index=max(turn, 0), messages=messages, answer=answer,
                   completion_id=completion_id)


def check_feedback(rubric: list[dict], ratings, escalate, correction) -> tuple[dict, bool, str]:
    """Ratings (criterion -> whole number within the criterion's range, only the project's criteria),
    escalate (true or false) and the correction (text), cleaned; InvalidInput names the first bad value."""
    if not isinstance(ratings, dict):
        raise InvalidInput("ratings must be an object mapping each rubric criterion to a score.")
    criteria = {c["name"]: c for c in rubric}
    unknown = sorted(set(ratings) - set(criteria))
    if unknown:
        raise InvalidInput(f"Unknown criterion {unknown[0]!r}: the project's rubric has {', '.join(criteria)}.")
    clean = {}
    for name, value in ratings.items():
        low, high = int(criteria[name].get("min", 1)), int(criteria[name].get("max", 5))
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"{name} must be a whole number from {low} to {high}, not {value!r}.")
        clean[name] = value
    if not isinstance(escalate, bool):
        raise InvalidInput("escalate must be true or false.")
    if correction is None:
        correction = ""
    if not isinstance(correction, str):
        raise InvalidInput("correction must be text.")
    if len(correction) > MAX_CORRECTION_CHARS:
        raise InvalidInput(f"The correction is longer than {MAX_CORRECTION_CHARS} characters.")
    return clean, escalate, correction.strip()


def _apply(session: Session, row: PilotExchange, ratings, escalate, correction) -> PilotExchange:
    pilot = get_pilot(session, row.pilot_id)
    ratings, escalate, correction = check_feedback(rubric_of(session.get(Project, pilot.project_id)), ratings,
                                                   escalate, correction)
    row.ratings, row.escalate, row.correction, row.rated_at = ratings, escalate, correction, utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def rate_exchange(session: Session, user: User, exchange_id: int, *, ratings: dict, escalate: bool,
                  correction: str = "") -> PilotExchange:
    """The agent's verdict on one answer (their own exchange; engineers may rate any). Rating again replaces it."""
    require(user, "pilot")
    row = session.get(PilotExchange, int(exchange_id))
    if row is None:
        raise NotFound(f"No pilot exchange {exchange_id}.")
    if row.user_id != user.id and not can(user, "evaluate"):
        raise PermissionDenied("You can rate only the answers you asked for.")
    return _apply(session, row, ratings, escalate, correction)


def served_feedback(session: Session, pilot_id: int, body) -> PilotExchange:
    """``POST /v1/feedback`` of serve-model --pilot: ``{"completion_id", "ratings": {criterion: score},
    "escalate": bool, "correction"?}`` onto the exchange recorded under that completion id in this pilot."""
    if not isinstance(body, dict):
        raise InvalidInput("The feedback must be a JSON object.")
    unknown = sorted(set(body) - {"completion_id", "ratings", "escalate", "correction"})
    if unknown:
        raise InvalidInput(f"Unknown field {unknown[0]!r}: send completion_id, ratings, escalate and correction.")
    completion_id = body.get("completion_id")
    if not isinstance(completion_id, str) or not completion_id:
        raise InvalidInput("completion_id is required: the id of the chat completion the feedback is about.")
    for field in ("ratings", "escalate"):
        if field not in body:
            raise InvalidInput(f"{field} is required.")
    row = session.exec(select(PilotExchange).where(PilotExchange.completion_id == completion_id,
                                                   PilotExchange.pilot_id == pilot_id)).first()
    if row is None:
        raise NotFound(f"No answer with completion id {completion_id!r} was recorded in this pilot.")
    return _apply(session, row, body["ratings"], body["escalate"], body.get("correction"))


def pilot_to_serve(session: Session, user: User, pilot_id: int, system: str) -> Pilot:
    """The pilot serve-model --pilot records into: it must pilot the served ``system`` and not have ended."""
    require(user, "evaluate")
    pilot = get_pilot(session, pilot_id)
    if resolve(session, system).key != pilot.system:
        raise InvalidInput(f"Pilot {pilot.id} ({pilot.name}) pilots {pilot.system}, not {system}: serve that "
                           f"system, or choose its pilot.")
    if _aware(pilot.ends_at) <= utcnow():
        raise InvalidInput(f"Pilot {pilot.id} ({pilot.name}) ended on {_aware(pilot.ends_at):%Y-%m-%d %H:%M} UTC.")
    return pilot
