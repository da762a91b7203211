"""ShareGPT dumps split long chats into chunks, so a chunk can start with the assistant or stop on the user.
FastChat's trainer rule keeps them: drop the leading assistant turns and a trailing user turn. On by default,
counted and shown as "repaired"; strict mode rejects such chunks instead."""
from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.curate.formats import repair_sharegpt_turns
from core.curate.importing import import_file
from storage.models import Example

ROOT = Path(__file__).resolve().parents[1]


def conv(*turns, **extra) -> dict:
    return {"conversations": [{"from": who, "value": text} for who, text in turns], **extra}


CHUNKS = [
    conv(("human", "My meter is broken."), ("gpt", "Sorry to hear that; we will send an engineer.")),
    conv(("gpt", "...and that is how tariffs work."), ("human", "And standing charges?"),
         ("gpt", "A fixed daily amount.")),  # starts with the assistant: a later chunk of a long chat
    conv(("system", "Be brief."), ("gpt", "continued"), ("gpt", "still continued"), ("human", "Refund?"),
         ("gpt", "Within 10 days."), ("human", "Thanks, and")),  # both ends cut
    conv(("gpt", "only the assistant")),  # nothing left to keep: rejected
    conv(("human", "a"), ("human", "b"), ("gpt", "c")),  # broken in the middle: not repairable
]


def test_the_rule_itself():
    turns = [{"role": r, "content": r} for r in ("assistant", "assistant", "user", "assistant", "user")]
    kept, dropped = repair_sharegpt_turns(turns)
    assert [t["role"] for t in kept] == ["user", "assistant"]
    assert dropped == "2 leading assistant messages and a trailing user message"
    assert repair_sharegpt_turns(kept) == (kept, "")


def test_split_dump_chunks_are_repaired_counted_and_strict_rejects_them(session, users, project, tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(CHUNKS, indent=1), encoding="utf-8")
    report = import_file(session, users["admin"], project, path)
    assert report.format == "sharegpt"
    assert (report.n_read, report.n_imported, report.n_repaired, report.n_rejected) == (5, 3, 2, 2)
    assert "2 ShareGPT conversations repaired" in report.message
    assert [r["dropped"] for r in report.repaired] == [
        "1 leading assistant message", "2 leading assistant messages and a trailing user message"]
    rows = session.exec(select(Example).where(Example.project_id == project.id).order_by(Example.id)).all()
    assert [t["content"] for t in rows[1].turns] == ["And standing charges?", "A fixed daily amount."]
    assert rows[2].system == "Be brief." and [t["content"] for t in rows[2].turns] == ["Refund?", "Within 10 days."]
    reasons = [r["reason"] for r in report.rejected]
    assert "no user/assistant messages" in reasons[0] and "do not alternate" in reasons[1]

    other = type(project)(name="strict", description="")
    session.add(other)
    session.commit()
    strict = import_file(session, users["admin"], other, path, strict=True)
    assert (strict.n_imported, strict.n_repaired, strict.n_rejected) == (0, 0, 4)
    assert "message 1 is assistant, expected user" in strict.rejected[0]["reason"]


def test_the_import_page_shows_the_repaired_count(session, users, project, tmp_path):
    path = tmp_path / "chunks.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CHUNKS[:3]), encoding="utf-8")
    at = AppTest.from_file(str(ROOT / "pages/import_data.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    at.session_state["project_id"] = project.id
    at.run()
    at.radio[0].set_value("A path on the server (big files, dataset folders)").run()
    at.text_input[0].set_value(str(path)).run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Repaired"] == "2"
    assert any("2 ShareGPT conversations repaired" in s.value for s in at.success)
