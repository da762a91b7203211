"""The demo project: customer-support examples for a fictional gas & electric utility.

Seeded through the same path a user takes: import the file, submit and approve every example, freeze
version "demo-v1".
"""
from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from core.curate.curation import review_example, submit_example
from core.curate.datasets import freeze_version
from core.curate.importing import import_file, save_upload
from core.projects import create_project
from storage.models import Example, Project, User

DEMO_FILE = Path(__file__).parent / "data" / "demo_utility.jsonl"
DEMO_NAME = "Utility support assistant"
DEMO_VERSION = "demo-v1"
DEMO_GUIDELINES = """\
### What a good answer looks like
- Start with one empathetic sentence, then give concrete, numbered next steps.
- Never invent account details, amounts or dates; ask for what is missing.
- **Gas smell or carbon monoxide: safety steps and the emergency number first.**
- Keep answers under 120 words.
"""


def seed_demo(session: Session, admin: User) -> Project:
    """Create the demo project with its approved examples and the frozen version ``demo-v1``."""
    project = create_project(session, admin, DEMO_NAME, "Demo: a support assistant for Brightwater Gas & Electric.",
                             DEMO_GUIDELINES)
    upload = save_upload(DEMO_FILE.name, DEMO_FILE.read_bytes())  # as a user would upload it
    import_file(session, admin, project, upload, "chat", strict=True, near_duplicates=False)
    for ex in session.exec(select(Example).where(Example.project_id == project.id).order_by(Example.id)).all():
        submit_example(session, admin, ex.id, ex.version)
        review_example(session, admin, ex.id, "approve")
    freeze_version(session, admin, project, DEMO_VERSION)
    return project
