"""The demo project: 1,130 customer-support examples for a fictional gas & electric utility, and its fact sheet.

The examples (data/demo_utility.jsonl) are written by ``python -m tools.demogen`` from one hand-written fact
sheet (data/demo_fact_sheet.md), so every answer gives the same phone lines, web pages and time limits. The sheet is
the project's guidelines, below the house style, and its checked rows are the project's facts to check.

Seeded through the same steps a user takes (import the file, approve, freeze "demo-v1"), but as one transaction
with one bulk approval: a first start stays fast, and a start that dies half-way leaves no half-made demo behind
(the next start would otherwise see a project and never finish it).
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session

from core.accounts import require
from core.curate.datasets import freeze_version
from core.curate.documents import add_document
from core.curate.factsheet import facts_to_check, load_fact_sheet
from core.curate.importing import import_file, save_upload
from core.projects import create_project
from storage.db import single_transaction
from storage.models import Example, ExampleStatus, Project, User, utcnow

DATA = Path(__file__).parent / "data"
DEMO_FILE = DATA / "demo_utility.jsonl"
FACT_SHEET = DATA / "demo_fact_sheet.md"
DEMO_NAME = "Utility support assistant"
DEMO_VERSION = "demo-v1"
HOUSE_STYLE = """\
### What a good answer looks like
- Start with one empathetic sentence, then give concrete, numbered next steps.
- Give phone lines, web pages, time limits and amounts exactly as the fact sheet below says; nothing else.
- Never invent account details, amounts or dates; ask for what is missing.
- **Gas smell or carbon monoxide: the emergency number first, then the safety steps.**
- Keep answers under 120 words; an SMS reply keeps only the steps that matter.
"""


def demo_guidelines() -> str:
    """The demo project's guidelines: the house style, then the whole fact sheet."""
    return HOUSE_STYLE + "\n" + FACT_SHEET.read_text(encoding="utf-8")


def approve_all_drafts(session: Session, reviewer: User, project: Project) -> int:
    """Approve every draft of ``project`` in one statement (a trusted, already reviewed source such as the demo
    file); each row's version moves on as a one-by-one review would move it."""
    require(reviewer, "review_data")
    table = Example.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table classes
    result = session.execute(update(table).where(table.c.project_id == project.id,
                                                 table.c.status == ExampleStatus.draft.value)
                             .values(status=ExampleStatus.approved.value, reviewed_by=reviewer.id,
                                     updated_at=utcnow(), version=table.c.version + 1))
    session.commit()
    return result.rowcount  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult


def seed_demo(session: Session, admin: User) -> Project:
    """Create the demo project with its approved examples, facts to check, the fact sheet as its first document
    and the frozen version ``demo-v1``;
    returns the project in ``session``."""
    with single_transaction() as tx:
        project = create_project(tx, admin, DEMO_NAME, "Demo: a support assistant for Brightwater Gas & Electric.",
                                 demo_guidelines())
        project.facts = facts_to_check(load_fact_sheet(FACT_SHEET))
        tx.add(project)
        tx.commit()
        add_document(tx, admin, project, FACT_SHEET.name, FACT_SHEET.read_bytes())  # the first knowledge document
        upload = save_upload(DEMO_FILE.name, DEMO_FILE.read_bytes())  # as a user would upload it
        import_file(tx, admin, project, upload, "chat", strict=True, near_duplicates=False)
        approve_all_drafts(tx, admin, project)
        freeze_version(tx, admin, project, DEMO_VERSION)
        project_id = project.id
    return session.get(Project, project_id)
