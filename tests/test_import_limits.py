"""Hostile or huge records in an import file are rejected one by one with a reason; the rest is kept, and memory
stays bounded (a few times the biggest record) whatever the file holds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

import core.curate.formats as formats
from core.curate.formats import limits
from core.curate.formats import Parsed, Rejected, read_file
from core.curate.importing import import_file
from storage.models import Example

ROOT = Path(__file__).resolve().parents[1]


def chat(q: str, a: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


DEEP = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"  # RecursionError in json
HUGE_INT = json.dumps(chat("q", "a"))[:-1] + ', "n": ' + "7" * 5000 + "}"  # ValueError without .msg


def _reasons(items) -> list[str]:
    return [i.reason if isinstance(i, Rejected) else "ok" for i in items]


@pytest.mark.parametrize("container", ["jsonl", "json_array"])
def test_deep_nesting_and_long_integers_are_rejected_records(container, session, project, users, tmp_path):
    good = [json.dumps(chat(f"How do I pay bill {i}?", f"Online, bill {i}.")) for i in range(3)]
    elements = [good[0], DEEP, good[1], HUGE_INT, good[2]]
    path = tmp_path / f"hostile.{'jsonl' if container == 'jsonl' else 'json'}"
    path.write_text("\n".join(elements) + "\n" if container == "jsonl" else "[" + ",\n".join(elements) + "]",
                    encoding="utf-8")
    report = import_file(session, users["admin"], project, path, "chat")
    assert (report.n_read, report.n_imported, report.n_rejected) == (5, 3, 2)
    reasons = {r["line"]: r["reason"] for r in report.rejected}
    assert "nested too deeply" in reasons[2]
    assert "4300 digits" in reasons[4] and "integer" in reasons[4]
    texts = [e.turns[0]["content"] for e in session.exec(select(Example).where(Example.project_id == project.id))]
    assert texts == [f"How do I pay bill {i}?" for i in range(3)]


def test_records_over_the_size_limit_are_rejected_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_RECORD_BYTES", 2000)
    monkeypatch.setattr(limits, "CHUNK", 300)  # the big record spans many buffer refills
    big = json.dumps(chat("big one", "x " * 5000))
    small = [json.dumps(chat(f"q{i}", f"a{i}")) for i in range(2)]
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_text("\n".join([small[0], big, small[1]]) + "\n", encoding="utf-8")
    array = tmp_path / "big.json"
    array.write_text("[\n" + ",\n".join([small[0], big, small[1]]) + "\n]", encoding="utf-8")
    for path in (jsonl, array):
        items = list(read_file(path, "chat"))
        assert _reasons(items)[0] == "ok" and _reasons(items)[2] == "ok", path.name
        assert items[1].reason.startswith("record too large") and "2,000 bytes per record" in items[1].reason
        assert [i.line for i in items] == ([1, 2, 3] if path is jsonl else [2, 3, 4])
        assert items[2].record["turns"][0]["content"] == "q1"


def test_a_cut_off_oversized_last_element_is_reported_as_cut_off(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_RECORD_BYTES", 2000)
    monkeypatch.setattr(limits, "CHUNK", 300)
    path = tmp_path / "cut.json"
    path.write_text("[" + json.dumps(chat("q", "a")) + ', {"messages": "' + "y" * 5000, encoding="utf-8")
    info = formats.ReadInfo()
    items = list(read_file(path, "chat", info=info))
    assert isinstance(items[0], Parsed) and "cut off" in items[1].reason and info.ended_early


_MEASURE = """
import json, sys
import psutil
sys.path.insert(0, {root!r})
mode, path = sys.argv[1], sys.argv[2]
from core.curate.formats import Parsed, read_file
if mode == "import":
    from sqlmodel import Session
    from core.accounts import first_admin
    from core.curate.importing import import_file
    from core.projects import create_project
    from core.startup import init_workspace
    from storage.db import get_engine
    init_workspace(with_demo=False)
    session = Session(get_engine(), expire_on_commit=False)
    admin = first_admin(session)
    project = create_project(session, admin, "big")
    warm = path + ".warm.jsonl"  # a first, one-record import loads the modules an import needs (datasketch...)
    open(warm, "w").write(json.dumps({{"instruction": "warm", "output": "up"}}) + chr(10))
    import_file(session, admin, project, warm)
import gc
gc.collect()
before = psutil.Process().memory_info().rss
if mode == "read":
    kept = sum(isinstance(item, Parsed) for item in read_file(path))
else:
    kept = import_file(session, admin, project, path).n_imported
# VmHWM: this process's own peak RSS (ru_maxrss would carry over the parent's peak across fork and exec).
peak = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(json.dumps({{"kept": kept, "growth": peak - before}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode,times", [("read", 4), ("import", 16)])
def test_a_15_mb_element_in_a_json_array_costs_a_few_times_its_size(mode, times, tmp_path):
    """The element used to cost 1.9 GB (a backtracking regex stepping over it). Reading holds it about twice;
    storing it adds what a 15 MB row costs SQLite (the text twice, as the answer and the search text, each
    serialised, bound and copied into the record): measured 2.3x for reading and 12x for the whole import."""
    element = 15 << 20
    path = tmp_path / "big.json"
    path.write_text(json.dumps([chat("q1", "a1"), chat("the big one", "word " * (element // 5)), chat("q3", "a3")]),
                    encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", _MEASURE.format(root=str(ROOT)), mode, str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"FINETUNE_STUDIO_HOME": str(tmp_path / "ws"),
                               "FINETUNE_STUDIO_IMPORT_ROOTS": str(tmp_path),
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kept"] == 3
    assert out["growth"] < times * element, f"{mode}: peak grew {out['growth'] / 2**20:.0f} MB"


def test_big_texts_normalise_and_count_the_same_piece_by_piece(monkeypatch):
    """Big texts are normalised a slice at a time (no list of millions of words); content hashes must not
    change, so the result equals the one-shot form for any text, Unicode spaces and Greek final sigma too."""
    import random

    import core.curate.dedup as dedup

    rng = random.Random(7)
    alphabet = ["a", "B", "Σ", "ς", "İ", "ß", " ", "\t", "\n", "\u2028", "\x1c", "\u3000", "x"]
    for piece in (1, 7, 300):
        monkeypatch.setattr(dedup, "_PIECE", piece)
        for _ in range(5):
            text = "".join(rng.choice(alphabet) for _ in range(dedup.BIG_TEXT + rng.randint(0, 5000)))
            assert dedup.normalise_text(text) == " ".join(text.lower().split())
            assert dedup.word_count(text) == len(text.split())
