"""The demo project: customer-support examples for a fictional gas & electric utility."""
from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session

from core.projects import create_project
from storage.models import Example, Project, User

DEMO_FILE = Path(__file__).parent / "data" / "demo_utility.jsonl"
DEMO_NAME = "Utility support assistant"
DEMO_GUIDELINES = """\
### What a good answer looks like
- Start with one empathetic sentence, then give concrete, numbered next steps.
- Never invent account details, amounts or dates; ask for what is missing.
- **Gas smell or carbon monoxide: safety steps and the emergency number first.**
- Keep answers under 120 words.
"""


def seed_demo(session: Session, admin: User) -> Project:
    project = create_project(session, admin, DEMO_NAME, "Demo: a support assistant for Brightwater Gas & Electric.",
                             DEMO_GUIDELINES)
    for line in DEMO_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        msgs = rec["messages"]
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        turns = [m for m in msgs if m["role"] != "system"]
        session.add(Example(project_id=project.id, system=system, turns=turns, tags=rec.get("tags", []),
                            status="approved", source="demo", created_by=admin.id))
    session.commit()
    return project
