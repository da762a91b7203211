"""An example's history: one ExampleRevision per step (created, edited, submitted, approved, rejected, edited
and approved by a reviewer), each with who, when, the status after it and the text as it was.

What a reviewer needs from it on a resubmitted example: the reason it was rejected last time, who did what
since, and what changed since the last review (a line diff of the readable text, difflib's unified format).
Imported examples have no revision for version 1: the import record says who and when, and ``since_review``
has nothing to compare until the first review.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from sqlmodel import Session, select

from core.curate.formats import make_record
from storage.models import Example, ExampleRevision, User

REVIEWED = ("approved", "rejected", "edited and approved")


def snapshot(example: Example) -> dict:
    """The example's text as a plain record (system, turns, input, tags, note)."""
    return make_record(example.system, [dict(t) for t in example.turns], example.input, example.tags, example.note)


def add_revision(session: Session, example: Example, action: str, user: User | None, reason: str = "") -> None:
    """Add (not commit) the revision for the step that just made ``example`` what it is now."""
    session.add(ExampleRevision(example_id=example.id, version=example.version, action=action,
                                status=example.status, user_id=user.id if user else None, reason=reason or "",
                                record=snapshot(example)))


def revisions(session: Session, example_id: int) -> list[ExampleRevision]:
    """Every recorded step of an example, oldest first."""
    return list(session.exec(select(ExampleRevision).where(ExampleRevision.example_id == example_id)
                             .order_by(ExampleRevision.id)))


@dataclass
class ReviewContext:
    """What a reviewer sees about an example's past: the last rejection, the steps, the diff since review."""

    last_rejection: ExampleRevision | None
    steps: list[ExampleRevision]
    last_review: ExampleRevision | None
    diff: list[str]  # unified diff lines from the last reviewed text to now; empty if unchanged or never reviewed


def review_context(session: Session, example: Example) -> ReviewContext:
    steps = revisions(session, example.id)
    rejections = [r for r in steps if r.action == "rejected"]
    reviewed = [r for r in steps if r.action in REVIEWED]
    last = reviewed[-1] if reviewed else None
    diff = record_diff(last.record, snapshot(example), f"version {last.version} ({last.action})",
                       f"version {example.version} (now)") if last else []
    return ReviewContext(rejections[-1] if rejections else None, steps, last, diff)


def record_lines(record: dict) -> list[str]:
    """A record as the lines a person compares: each part labelled, long texts kept line by line."""
    lines: list[str] = []

    def part(label: str, text: str) -> None:
        if text:
            body = text.splitlines() or [""]
            lines.append(f"[{label}] {body[0]}")
            lines.extend(body[1:])

    part("system", record.get("system") or "")
    for turn in record.get("turns") or []:
        part(turn.get("role", "?"), turn.get("content") or "")
    part("input", record.get("input") or "")
    lines.append(f"[tags] {', '.join(record.get('tags') or [])}")
    lines.append(f"[note] {record.get('note') or ''}")
    return lines


def record_diff(old: dict, new: dict, old_label: str, new_label: str) -> list[str]:
    """Unified diff lines between two records (empty when their text is the same)."""
    return list(difflib.unified_diff(record_lines(old), record_lines(new), old_label, new_label, lineterm="", n=2))
