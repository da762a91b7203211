"""The registered compute targets (ComputeTarget rows): add, change, remove, list, check; and the guard that a
launch on a target can work from here (a multi-host target needs a database every node reaches)."""
from __future__ import annotations

import json

from sqlmodel import Session, select

from core.accounts import require
from core.errors import InvalidInput, NotFound
from core.jobs.targets import TARGET_KINDS
from core.jobs.targets.base import SQLITE_REFUSAL, Offer, Target
from core.names import check_name
from core.workspace import database_url
from storage.models import ComputeTarget, Job, JobStatus

THIS_MACHINE = "this machine"  # what pages and the CLI call "no target": the local queue
LOCAL = "local"  # TrainConfig.target's name for this machine (and "" in older configs): never a target's name


def build(row: ComputeTarget) -> Target:
    """The Target object of a stored row."""
    kind = TARGET_KINDS.get(row.kind)
    if kind is None:
        raise InvalidInput(f"Target {row.name} is of kind {row.kind!r}, which this installation does not know "
                           f"(known: {', '.join(TARGET_KINDS)}).")
    return kind(row.settings or {})


def _checked(kind: str, settings: dict | str) -> dict:
    """``settings`` (a dict, or JSON text from a form) validated by the kind's own check."""
    if kind not in TARGET_KINDS:
        raise InvalidInput(f"Unknown target kind {kind!r}; use one of: {', '.join(TARGET_KINDS)}.")
    if isinstance(settings, str):
        try:
            settings = json.loads(settings) if settings.strip() else {}
        except ValueError as err:
            raise InvalidInput(f"The settings are not valid JSON ({err}); write them as "
                               "{\"address\": \"http://head:8265\"}.") from None
    if not isinstance(settings, dict):
        raise InvalidInput("A target's settings are a JSON object, e.g. {\"address\": \"http://head:8265\"}.")
    return TARGET_KINDS[kind].check_settings(settings)


def add_target(session: Session, user, name: str, kind: str, settings: dict | str) -> ComputeTarget:
    """Register a target (admins); its settings are validated by its kind, its name is unique."""
    require(user, "manage_targets")
    name = check_name(name, "compute target")
    if name.lower() in (THIS_MACHINE, LOCAL) or len(name) > 64:
        raise InvalidInput(f"A compute target cannot be named {name!r} (reserved, or over 64 characters).")
    if session.exec(select(ComputeTarget).where(ComputeTarget.name == name)).first() is not None:
        raise InvalidInput(f"A compute target named {name!r} exists already; change it or pick another name.")
    row = ComputeTarget(name=name, kind=kind, settings=_checked(kind, settings), created_by=user.id)
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def update_target(session: Session, user, name: str, settings: dict | str) -> ComputeTarget:
    """Replace a target's settings (validated by its kind); jobs already submitted keep running where they are."""
    require(user, "manage_targets")
    row = get_target(session, name)
    row.settings = _checked(row.kind, settings)
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def remove_target(session: Session, user, name: str) -> str:
    """Remove a target; refused while a job of it is queued or running. Finished jobs keep their run folders and
    their config.json, which names the target."""
    require(user, "manage_targets")
    row = get_target(session, name)
    live = session.exec(select(Job.id).where(Job.target_id == row.id, Job.status.in_(
        [JobStatus.queued.value, JobStatus.running.value]))).all()
    if live:
        raise InvalidInput(f"Target {row.name} still has run(s) {', '.join(map(str, live))} queued or running; "
                           "cancel them or wait for them to end first.")
    for job in session.exec(select(Job).where(Job.target_id == row.id)).all():
        job.target_id = None
        session.add(job)
    session.delete(row)
    session.commit()
    return row.name


def list_targets(session: Session) -> list[ComputeTarget]:
    return list(session.exec(select(ComputeTarget).order_by(ComputeTarget.name)))


def target_id_of(session: Session, name: str) -> int | None:
    """The id of the target a run names (None: this machine, "local" or empty)."""
    return None if (name or LOCAL) == LOCAL else get_target(session, name).id


def get_target(session: Session, name_or_id: str | int) -> ComputeTarget:
    """A target by name (or id)."""
    row = None
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        row = session.get(ComputeTarget, int(name_or_id))
    if row is None:
        row = session.exec(select(ComputeTarget).where(ComputeTarget.name == str(name_or_id).strip())).first()
    if row is None:
        names = ", ".join(t.name for t in list_targets(session)) or "none registered"
        raise NotFound(f"No compute target {str(name_or_id)!r} (targets: {names}; an admin adds them on the Admin "
                       "page or with `finetune-studio targets add`).")
    return row


def check_target(row: ComputeTarget) -> Offer:
    """What the target offers now, or why it is unreachable (never raises on an unreachable cluster)."""
    try:
        return build(row).offer()
    except InvalidInput as err:
        return Offer(reachable=False, reason=str(err))


def check_database(target: Target) -> None:
    """Refuse a multi-host target on SQLite: ranks on other machines cannot share an SQLite file safely."""
    if target.needs_shared_database() and database_url().startswith("sqlite"):
        raise InvalidInput(SQLITE_REFUSAL.format(kind=target.kind.capitalize()))


def check_launchable(row: ComputeTarget, nodes: int, procs_per_node: int) -> Target:
    """The Target a launch of ``nodes`` x ``procs_per_node`` would use, after refusing what cannot work: SQLite
    with a multi-host target, an unreachable target, or more nodes than it has."""
    target = build(row)
    check_database(target)
    offer = target.offer()
    if not offer.reachable:
        raise InvalidInput(f"Target {row.name} is not reachable now: {offer.reason}")
    if nodes > max(1, offer.nodes):
        raise InvalidInput(f"The run asks for {nodes} node(s) but target {row.name} has {offer.nodes} now.")
    return target
