"""Formats: detection, and import -> export -> import loses nothing, one test per format."""
from __future__ import annotations

import json

import pytest

from core.curate.curation import record_of
from core.curate.datasets import export
from core.curate.formats import detect_format, read_file, Parsed
from core.curate.importing import import_file
from core.projects import create_project
from sqlmodel import select
from storage.models import Example

SYSTEM = "You are a careful support assistant."
SINGLE = [
    {"system": SYSTEM, "turns": [{"role": "user", "content": "My meter shows 0000. Is it broken?"},
                                 {"role": "assistant", "content": "It may be a display fault.\n1. Press the button."}],
     "input": "", "tags": ["meter"], "note": "check wording"},
    {"system": "", "turns": [{"role": "user", "content": "Summarise this complaint"},
                             {"role": "assistant", "content": "The customer was billed twice — «café» ü."}],
     "input": "I paid £40 twice in May.", "tags": [], "note": ""},
]
MULTI = [
    {"system": SYSTEM, "turns": [{"role": "user", "content": "Hi, I'm moving house."},
                                 {"role": "assistant", "content": "Congratulations! When is the move?"},
                                 {"role": "user", "content": "Next Friday."},
                                 {"role": "assistant", "content": "Take a meter reading on the day."}],
     "input": "", "tags": ["moving", "multi"], "note": ""},
]


def _records(session, project):
    rows = session.exec(select(Example).where(Example.project_id == project.id).order_by(Example.id)).all()
    return [record_of(r) for r in rows]


def _chat_view(rec):
    """What a chat-only format can hold: Alpaca input merged into the user message."""
    turns = [dict(t) for t in rec["turns"]]
    if rec["input"]:
        turns[-2]["content"] += "\n\n" + rec["input"]
    return {**rec, "turns": turns, "input": ""}


def _seed(session, users, records):
    project = create_project(session, users["admin"], "Round trip", "")
    for i, rec in enumerate(records):
        session.add(Example(project_id=project.id, system=rec["system"], turns=rec["turns"], input=rec["input"],
                            tags=rec["tags"], note=rec["note"], content_hash=f"h{i}"))
    session.commit()
    return project


@pytest.mark.parametrize("fmt,view", [
    ("alpaca_json", lambda r: r),
    ("alpaca_jsonl", lambda r: r),
    ("sharegpt", _chat_view),
    ("chat_jsonl", _chat_view),
    ("prompt_completion", _chat_view),
    ("csv", None),
    ("hf_disk", _chat_view),
])
def test_round_trip(fmt, view, session, users, tmp_path):
    admin = users["admin"]
    records = SINGLE + MULTI
    source = _seed(session, users, records)
    out = export(session, admin, source, fmt, tmp_path / f"out.{fmt}")
    target = create_project(session, admin, "Target", "")
    report = import_file(session, admin, target, out)
    assert report.n_rejected == 0, report.rejected
    got = _records(session, target)
    # CSV keeps Alpaca input for single-turn pairs and whole conversations for multi-turn ones.
    expected = [view(r) for r in records] if view else records
    # Every export is split (a DatasetDict, or a file per split): it comes back split by split.
    got = sorted(got, key=json.dumps)
    expected = sorted(expected, key=json.dumps)
    assert got == expected


def test_prompt_completion_both_forms(session, project, users, tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What is a standing charge?", "completion": "A fixed daily fee."},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "completion": [{"role": "assistant", "content": "Hello! How can I help?"}]},
    ]) + "\n", encoding="utf-8")
    assert detect_format(path) == "prompt_completion"
    report = import_file(session, users["admin"], project, path)
    assert report.n_imported == 2
    recs = _records(session, project)
    assert recs[1]["system"] == "Be brief." and recs[1]["turns"][-1]["content"] == "Hello! How can I help?"


def test_parquet_import(session, project, users, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"instruction": f"Question {i}", "input": "", "output": f"Answer {i}"}
                                  for i in range(5)])
    pq.write_table(table, tmp_path / "data.parquet")
    report = import_file(session, users["admin"], project, tmp_path / "data.parquet")
    assert (report.format, report.n_imported) == ("parquet", 5)


def test_detection(tmp_path):
    cases = {
        "a.jsonl": {"instruction": "x", "input": "", "output": "y"},
        "s.jsonl": {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]},
        "c.jsonl": {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
        "p.jsonl": {"prompt": "x", "completion": "y"},
    }
    expected = {"a.jsonl": "alpaca", "s.jsonl": "sharegpt", "c.jsonl": "chat", "p.jsonl": "prompt_completion"}
    for name, rec in cases.items():
        (tmp_path / name).write_text(json.dumps(rec) + "\n")
        assert detect_format(tmp_path / name) == expected[name]
        arr = tmp_path / (name + ".json")
        arr.write_text(json.dumps([rec, rec], indent=2))
        assert detect_format(arr) == expected[name]
    (tmp_path / "d.csv").write_text("instruction,output\nx,y\n")
    assert detect_format(tmp_path / "d.csv") == "csv"


def test_sharegpt_role_names_from_the_wild(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = []
    for user_name, bot_name in [("human", "gpt"), ("user", "chatgpt"), ("human", "bing"), ("user", "bard"),
                                ("human", "model"), ("user", "assistant")]:
        lines.append(json.dumps({"conversations": [{"from": "system", "value": "sys"},
                                                   {"from": user_name, "value": "q"},
                                                   {"from": bot_name, "value": "a"}]}))
    lines.append(json.dumps({"conversations": [{"from": "narrator", "value": "q"}, {"from": "gpt", "value": "a"}]}))
    path.write_text("\n".join(lines) + "\n")
    items = list(read_file(path))
    assert all(isinstance(i, Parsed) and i.record["system"] == "sys" for i in items[:6])
    assert items[6].line == 7 and "unknown role 'narrator'" in items[6].reason


def test_json_array_elements_across_buffer_refills(tmp_path, monkeypatch):
    from core.curate.formats import limits

    recs = [{"instruction": f"q{i} " + "[{\"x\"}] " * i, "input": "", "output": f"a{i}"} for i in range(30)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(recs, indent=2))
    monkeypatch.setattr(limits, "CHUNK", 7)  # every element spans many refills
    items = list(read_file(path))
    assert [i.record["turns"][0]["content"] for i in items] == [r["instruction"] for r in recs]
    assert [i.line for i in items] == [2 + 5 * i for i in range(30)]
