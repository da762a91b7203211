"""Curation: the annotator queue, editing with optimistic locking, review, ratings and agreement.

The editor's hints live in core.curate.hints (re-exported here for the pages); each step is recorded in
the example's history (core.curate.history) in the same transaction as the change.

Statuses: draft -> submitted -> approved | rejected (with a reason). A rejected example goes back to the
annotator queue with its reason; resubmitting it clears the reason. Editing an approved example sends it
back to draft, so nothing changes in the training data without a second look.

Every save carries the ``version`` it started from; a save against a newer version is refused with
``Conflict`` carrying both versions (the page shows them side by side and keeps the user's edit).
Queues page by keyset (``id > last``) on the (project_id, status, id) index: a page costs the same at
row 100,000 as at row 1.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from sqlalchemy import String, cast, func, or_, update
from sqlmodel import Session, select

from core.accounts import require
from core.curate.dedup import NearDuplicateIndex, near_text, record_hash, record_text, search_text
from core.curate.hints import (HINT_TEXTS, SHORT_RESPONSE_WORDS, Hint, default_token_counter,  # noqa: F401
                                estimate_tokens, example_hints, quality_hints, token_counter)
from core.curate.history import add_revision, snapshot
from core.errors import Conflict, InvalidInput, NotFound
from core.curate.formats import BadRecord, make_record, validate_turns
from storage.models import Example, ExampleRating, ExampleStatus, Project, User, utcnow, visible_examples

PAGE_SIZE = 50
NEAR_DUP_SCAN_LIMIT = 20_000  # newest examples compared when a single example is created by hand
STATUSES = [s.value for s in ExampleStatus]


# ---------------------------------------------------------------- reading


def record_of(example: Example) -> dict:
    """The normalised record (system, turns, input, tags, note) of an example."""
    return snapshot(example)


def excerpt(example: Example, limit: int = 80) -> str:
    """The first user message on one line, cut to ``limit`` characters: what tells queue rows apart (the
    system prompt is often the same on every row)."""
    first = next((t.get("content") or "" for t in example.turns if t.get("role") == "user"), "") or example.input
    text = " ".join(first.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def get_example(session: Session, example_id: int, project: Project | None = None) -> Example:
    """An example users may see (not one of an import still running), or NotFound."""
    ex = session.exec(select(Example).where(Example.id == example_id, visible_examples())).first()
    if ex is None or (project is not None and ex.project_id != project.id):
        raise NotFound(f"No example #{example_id}.")
    return ex


def list_tags(session: Session, project: Project) -> list[str]:
    """All tags used in the project (scans tags only)."""
    tags: set[str] = set()
    for row in session.exec(select(Example.tags).where(Example.project_id == project.id, visible_examples())):
        tags.update(row or [])
    return sorted(tags)


def queue_query(project: Project, *, status: str | Iterable[str] | None = None, tag: str | None = None,
                annotator: int | None = None, search: str | None = None, after_id: int | None = None,
                before_id: int | None = None, limit: int | None = PAGE_SIZE):
    """The SELECT for one queue page, or every match with ``limit=None`` (exposed so tests can check the plan
    uses the index)."""
    q = select(Example).where(Example.project_id == project.id, visible_examples())
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        q = q.where(Example.status.in_(statuses)) if len(statuses) > 1 else q.where(Example.status == statuses[0])
    if tag:
        # Tags are a JSON list; matching its text form with quotes works on SQLite and PostgreSQL alike.
        q = q.where(cast(Example.tags, String).like(f'%"{_escape_like(tag)}"%', escape="\\"))
    if annotator:
        q = q.where(or_(Example.assigned_to == annotator, Example.created_by == annotator,
                        Example.updated_by == annotator))
    if search:
        q = q.where(Example.search_text.like(f"%{_escape_like(search.lower().strip())}%", escape="\\"))
    if before_id is not None:
        return q.where(Example.id < before_id).order_by(Example.id.desc()).limit(limit)
    if after_id is not None:
        q = q.where(Example.id > after_id)
    q = q.order_by(Example.id)
    return q.limit(limit) if limit is not None else q


def queue_page(session: Session, project: Project, *, status=None, tag=None, annotator=None, search=None,
               after_id: int | None = None, before_id: int | None = None, limit: int = PAGE_SIZE) -> list[Example]:
    """One page of examples in id order: the page after ``after_id`` or the one before ``before_id``."""
    rows = list(session.exec(queue_query(project, status=status, tag=tag, annotator=annotator, search=search,
                                         after_id=after_id, before_id=before_id, limit=limit)))
    return sorted(rows, key=lambda e: e.id) if before_id is not None else rows


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def next_for(session: Session, project: Project, user: User, after_id: int | None = None) -> Example | None:
    """The next example ``user`` should work on after ``after_id``.

    First their rejected examples (with the reviewer's reason), then drafts assigned to them or to
    nobody. In multi-annotator mode, submitted examples that still need ratings and that the user has
    not rated come after those.
    """
    after = after_id or 0
    mine = or_(Example.created_by == user.id, Example.updated_by == user.id, Example.assigned_to == user.id)
    rejected = session.exec(select(Example).where(Example.project_id == project.id, visible_examples(),
                                                  Example.status == ExampleStatus.rejected.value, mine,
                                                  Example.id > after).order_by(Example.id).limit(1)).first()
    if rejected:
        return rejected
    draft = session.exec(select(Example).where(
        Example.project_id == project.id, Example.status == ExampleStatus.draft.value, visible_examples(),
        or_(Example.assigned_to == user.id, Example.assigned_to.is_(None)), Example.id > after,
    ).order_by(Example.id).limit(1)).first()
    if draft or project.annotators_per_example <= 1:
        return draft
    rated = select(ExampleRating.example_id).where(ExampleRating.user_id == user.id)
    n_ratings = (select(func.count()).select_from(ExampleRating)
                 .where(ExampleRating.example_id == Example.id).scalar_subquery())
    return session.exec(select(Example).where(
        Example.project_id == project.id, Example.status == ExampleStatus.submitted.value,
        Example.id > after, Example.id.not_in(rated), n_ratings < project.annotators_per_example,
    ).order_by(Example.id).limit(1)).first()


def status_counts(session: Session, project: Project) -> dict[str, int]:
    rows = session.exec(select(Example.status, func.count()).where(Example.project_id == project.id,
                                                                   visible_examples())
                        .group_by(Example.status)).all()
    return {s: 0 for s in STATUSES} | dict(rows)


# ---------------------------------------------------------------- writing


def _clean(system: str, turns: list, input: str, tags: Iterable[str] | None, note: str,
           answer_to_write: bool = False) -> dict:
    turns = [{"role": t.get("role"), "content": t.get("content") if isinstance(t.get("content"), str) else ""}
             for t in turns]
    try:
        # A draft whose last answer is left for the annotator to write is checked as if it were written.
        validate_turns(turns[:-1] + [{**turns[-1], "content": "-"}] if answer_to_write and turns else turns)
    except BadRecord as err:
        raise InvalidInput(f"Cannot save: {err}.") from None
    clean_tags = sorted({str(t).strip() for t in (tags or []) if str(t).strip()})
    return make_record(system or "", turns, input or "", clean_tags, note or "")


def _stored(example: Example) -> dict:
    """The example's record as ``_clean`` would make it, to tell whether an edit changes anything."""
    stored = record_of(example)
    turns = [{"role": t.get("role"), "content": t.get("content") if isinstance(t.get("content"), str) else ""}
             for t in stored["turns"]]
    return stored | {"turns": turns, "tags": sorted({t.strip() for t in stored["tags"] if t.strip()})}


def is_unchanged(example: Example, record: dict) -> bool:
    """True when the editor's ``record`` is what ``example`` already stores (saving it would change nothing)."""
    try:
        clean = _clean(record["system"], record["turns"], record["input"], record["tags"], record["note"],
                       answer_to_write=True)
    except InvalidInput:
        return False
    return clean == _stored(example)


def _derived(record: dict, count_tokens: Callable[[str], int]) -> dict:
    return {"content_hash": record_hash(record), "search_text": search_text(record),
            "token_count": count_tokens(record_text(record))}


def create_example(session: Session, user: User, project: Project, *, system: str = "", turns: list,
                   input: str = "", tags: Iterable[str] | None = None, note: str = "", submit: bool = False,
                   count_tokens: Callable[[str], int] = estimate_tokens, source: str = "manual",
                   origin: dict | None = None, answer_to_write: bool = False,
                   assigned_to: int | None = None) -> Example:
    """A new example written by hand (or made from a reviewed eval item: ``source`` and ``origin`` say so).
    Exact duplicates are refused; near duplicates are flagged. ``answer_to_write``: a draft whose last answer
    is still empty, for the annotator to write (it cannot be submitted so). ``assigned_to``: the annotator whose
    queue it goes to first (None: anyone's)."""
    require(user, "curate")
    if answer_to_write and submit:
        raise InvalidInput("An example without its answer cannot be submitted; write the answer first.")
    record = _clean(system, turns, input, tags, note, answer_to_write=answer_to_write)
    derived = _derived(record, count_tokens)
    dup = session.exec(select(Example.id).where(Example.project_id == project.id, visible_examples(),
                                                Example.content_hash == derived["content_hash"])).first()
    if dup:
        raise InvalidInput(f"Example #{dup} already has the same text.")
    ex = Example(project_id=project.id, system=record["system"], turns=record["turns"], input=record["input"],
                 tags=record["tags"], note=record["note"], source=source, origin=dict(origin or {}),
                 created_by=user.id,
                 updated_by=user.id, assigned_to=assigned_to,
                 status=(ExampleStatus.submitted if submit else ExampleStatus.draft).value,
                 near_duplicate_of=find_near_duplicate(session, project, record), **derived)
    session.add(ex)
    session.flush()
    add_revision(session, ex, "created", user)
    session.commit()
    session.refresh(ex)
    return ex


def find_near_duplicate(session: Session, project: Project, record: dict, exclude_id: int | None = None
                        ) -> int | None:
    """The id of a near duplicate of ``record`` among the project's newest examples, or None."""
    rows = session.exec(select(Example.id, Example.turns, Example.input).where(Example.project_id == project.id,
                                                                               visible_examples())
                        .order_by(Example.id.desc()).limit(NEAR_DUP_SCAN_LIMIT)).all()
    rows = [r for r in rows if r[0] != exclude_id]
    if not rows:
        return None
    index = NearDuplicateIndex()
    for start in range(0, len(rows), 2000):
        part = rows[start:start + 2000]
        for row, sig in zip(part, index.signatures([near_text({"turns": r[1], "input": r[2]}) for r in part])):
            index.add(row[0], sig)
    matches = index.query(index.signatures([near_text(record)])[0])
    return min(matches) if matches else None


def save_example(session: Session, user: User, example_id: int, *, expected_version: int, system: str,
                 turns: list, input: str = "", tags: Iterable[str] | None = None, note: str = "",
                 submit: bool = False, count_tokens: Callable[[str], int] = estimate_tokens) -> Example:
    """Save an edit made from ``expected_version``; refuse it with Conflict if someone saved in between.

    ``submit`` also moves it to submitted (clearing a reject reason). Without it, an approved example
    whose text changed goes back to draft. A save that would change nothing (same text, tags and note, and no
    status change) writes nothing and returns the example as it is: no new version, no history entry.
    """
    require(user, "curate")
    ex = get_example(session, example_id)
    record = _clean(system, turns, input, tags, note)
    if record == _stored(ex) and (not submit or ex.status == ExampleStatus.submitted.value):
        return ex
    derived = _derived(record, count_tokens)
    content_changed = derived["content_hash"] != ex.content_hash
    status, reason = ex.status, ex.reject_reason
    if submit:
        status, reason = ExampleStatus.submitted.value, ""
    elif content_changed and status == ExampleStatus.approved.value:
        status = ExampleStatus.draft.value
    values = dict(system=record["system"], turns=record["turns"], input=record["input"], tags=record["tags"],
                  note=record["note"], status=status, reject_reason=reason, updated_by=user.id,
                  updated_at=utcnow(), version=expected_version + 1, **derived)
    _update_versioned(session, ex, expected_version, values, attempted=record, user=user,
                      action="submitted" if submit else "edited")
    return ex


def _update_versioned(session: Session, ex: Example, expected_version: int, values: dict,
                      attempted: dict | None, user: User, action: str, reason: str = "") -> None:
    """UPDATE ... WHERE version = expected: atomic, so two concurrent saves cannot both win. The step is
    recorded in the example's history in the same transaction."""
    result = session.exec(update(Example).where(Example.id == ex.id, Example.version == expected_version)
                          .values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        session.refresh(ex)
        raise Conflict(
            f"Example #{ex.id} was changed by someone else (now version {ex.version}, you edited version "
            f"{expected_version}). Both versions are shown; copy what you need and save again.",
            current=record_of(ex) | {"version": ex.version, "status": ex.status},
            attempted=attempted,
        )
    session.refresh(ex)
    add_revision(session, ex, action, user, reason)
    session.commit()
    session.refresh(ex)


def submit_example(session: Session, user: User, example_id: int, expected_version: int) -> Example:
    """draft or rejected -> submitted."""
    require(user, "curate")
    ex = get_example(session, example_id)
    if ex.status not in (ExampleStatus.draft.value, ExampleStatus.rejected.value):
        raise InvalidInput(f"Example #{ex.id} is {ex.status}; only drafts and rejected examples can be submitted.")
    _update_versioned(session, ex, expected_version,
                      dict(status=ExampleStatus.submitted.value, reject_reason="", updated_by=user.id,
                           updated_at=utcnow(), version=expected_version + 1), attempted=None, user=user,
                      action="submitted")
    return ex


def review_example(session: Session, user: User, example_id: int, decision: str, reason: str = "",
                   expected_version: int | None = None, fix: dict | None = None) -> Example:
    """A reviewer approves or rejects (with a reason) a submitted example.

    ``fix`` is the text as the reviewer typed it while fixing the example (system, turns, input, tags, note):
    if it differs from the example, an approval approves the fix and a rejection is refused, so a fix is
    never dropped unseen.
    """
    require(user, "review_data")
    ex = get_example(session, example_id)
    if decision not in ("approve", "reject"):
        raise InvalidInput("Decide 'approve' or 'reject'.")
    if fix is not None and fix_changes(ex, fix):
        if decision == "reject":
            raise InvalidInput(f"You changed #{ex.id}: a rejection would drop your fix. Approve the fixed "
                               "text, or undo your fix to reject the text as submitted.")
        version = ex.version if expected_version is None else expected_version
        return fix_and_approve(session, user, ex.id, expected_version=version, **fix)
    if ex.status != ExampleStatus.submitted.value:
        raise InvalidInput(f"Example #{ex.id} is {ex.status}; only submitted examples can be reviewed.")
    reason = (reason or "").strip()
    if decision == "reject" and not reason:
        raise InvalidInput("Say why you reject it: the annotator sees the reason.")
    version = ex.version if expected_version is None else expected_version
    status = ExampleStatus.approved.value if decision == "approve" else ExampleStatus.rejected.value
    _update_versioned(session, ex, version,
                      dict(status=status, reject_reason=reason if decision == "reject" else "",
                           reviewed_by=user.id, updated_at=utcnow(), version=version + 1), attempted=None,
                      user=user, action="approved" if decision == "approve" else "rejected",
                      reason=reason if decision == "reject" else "")
    return ex


def fix_changes(example: Example, fix: dict) -> bool:
    """Whether a reviewer's fix (system, turns, input, tags, note as typed) changes the example."""
    now = record_of(example)
    try:
        return _clean(**fix) != _clean(now["system"], now["turns"], now["input"], now["tags"], now["note"])
    except InvalidInput:  # a fix that cannot be saved is a change (approving it says why it cannot)
        return True


def fix_and_approve(session: Session, user: User, example_id: int, *, expected_version: int, system: str,
                    turns: list, input: str = "", tags: Iterable[str] | None = None, note: str = "",
                    count_tokens: Callable[[str], int] = estimate_tokens) -> Example:
    """A reviewer corrects a submitted example (a typo, a tag) and approves it in one step, recorded in its
    history as "edited and approved" with the text before and after, so nothing changes unseen."""
    require(user, "review_data")
    ex = get_example(session, example_id)
    if ex.status != ExampleStatus.submitted.value:
        raise InvalidInput(f"Example #{ex.id} is {ex.status}; only submitted examples can be reviewed.")
    record = _clean(system, turns, input, tags, note)
    derived = _derived(record, count_tokens)
    dup = session.exec(select(Example.id).where(Example.project_id == ex.project_id, Example.id != ex.id,
                                                Example.content_hash == derived["content_hash"])).first()
    if dup:
        raise InvalidInput(f"Example #{dup} already has the same text.")
    values = dict(system=record["system"], turns=record["turns"], input=record["input"], tags=record["tags"],
                  note=record["note"], status=ExampleStatus.approved.value, reject_reason="", reviewed_by=user.id,
                  updated_by=user.id, updated_at=utcnow(), version=expected_version + 1, **derived)
    _update_versioned(session, ex, expected_version, values, attempted=record, user=user,
                      action="edited and approved")
    return ex


def count_submitted(session: Session, project: Project, *, tag: str | None = None, annotator: int | None = None,
                    search: str | None = None) -> int:
    """How many submitted examples match these filters (what a bulk approve would approve)."""
    ids = queue_query(project, status=ExampleStatus.submitted.value, tag=tag, annotator=annotator, search=search,
                      limit=None).with_only_columns(Example.id).order_by(None).subquery()
    return session.exec(select(func.count()).select_from(ids)).one()


def approve_selection(session: Session, user: User, project: Project, *, expected: int, tag: str | None = None,
                      annotator: int | None = None, search: str | None = None) -> int:
    """Approve every submitted example matching the filters, in one transaction; returns how many.

    ``expected`` is the count the reviewer confirmed; if examples were submitted, edited or reviewed since,
    the count differs and nothing is approved (look again, then confirm the new number).
    """
    require(user, "review_data")
    rows = list(session.exec(queue_query(project, status=ExampleStatus.submitted.value, tag=tag,
                                         annotator=annotator, search=search, limit=None)))
    if len(rows) != expected:
        raise InvalidInput(f"The selection changed: {len(rows):,} examples match now, not {expected:,}. "
                           "Nothing was approved; check them and confirm again.")
    now = utcnow()
    for ex in rows:
        result = session.exec(update(Example).where(Example.id == ex.id, Example.version == ex.version,
                                                    Example.status == ExampleStatus.submitted.value)
                              .values(status=ExampleStatus.approved.value, reject_reason="", reviewed_by=user.id,
                                      updated_at=now, version=ex.version + 1)
                              .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            session.rollback()
            raise InvalidInput(f"Example #{ex.id} changed while approving; nothing was approved. Try again.")
        session.refresh(ex)
        add_revision(session, ex, "approved", user)
    session.commit()
    return len(rows)


# ---------------------------------------------------------------- multi-annotator ratings and agreement


RATING_LABELS = {1: "unusable", 2: "poor", 3: "acceptable", 4: "good", 5: "excellent"}


def rate_example(session: Session, user: User, example_id: int, rating: int) -> ExampleRating:
    """One annotator's 1-5 quality rating of an example (replaces their earlier rating)."""
    require(user, "curate")
    if rating not in RATING_LABELS:
        raise InvalidInput("Ratings go from 1 (unusable) to 5 (excellent).")
    get_example(session, example_id)
    row = session.exec(select(ExampleRating).where(ExampleRating.example_id == example_id,
                                                   ExampleRating.user_id == user.id)).first()
    if row is None:
        row = ExampleRating(example_id=example_id, user_id=user.id, rating=rating)
    row.rating = rating
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def agreement(session: Session, project: Project) -> dict:
    """Krippendorff's alpha (ordinal) over the project's ratings, with how many items and annotators it used.

    ``alpha`` is None when there is not enough to compute it (fewer than two ratings on any item).
    """
    import krippendorff
    import numpy as np

    rows = session.exec(select(ExampleRating.user_id, ExampleRating.example_id, ExampleRating.rating)
                        .join(Example, Example.id == ExampleRating.example_id)
                        .where(Example.project_id == project.id)).all()
    per_item: dict[int, int] = {}
    for _, ex_id, _ in rows:
        per_item[ex_id] = per_item.get(ex_id, 0) + 1
    items = sorted(i for i, n in per_item.items() if n >= 2)
    annotators = sorted({u for u, ex_id, _ in rows if ex_id in set(items)})
    out: dict[str, Any] = {"alpha": None, "n_items": len(items), "n_annotators": len(annotators),
                           "n_ratings": len(rows)}
    if not items or len(annotators) < 2:
        return out
    col = {ex: j for j, ex in enumerate(items)}
    rowi = {u: i for i, u in enumerate(annotators)}
    data = np.full((len(annotators), len(items)), np.nan)
    for u, ex_id, rating in rows:
        if ex_id in col:
            data[rowi[u], col[ex_id]] = rating
    values = set(data[~np.isnan(data)].tolist())
    if len(values) < 2:
        out["alpha"] = 1.0  # everyone gave the same rating everywhere: perfect agreement, alpha undefined
        return out
    out["alpha"] = float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))
    return out
