"""Import: every bad-input case keeps the good records and names the bad ones by line; strict; duplicates."""
from __future__ import annotations

import codecs
import json

import pytest
from sqlmodel import select

from core.errors import InvalidInput, PermissionDenied
from core.curate.importing import import_file
from storage.models import Example, ImportRecord


def chat(q, a, system=None, **extra):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs, **extra}


GOOD = [chat(f"How do I read meter number {i}?", f"Look at the display of meter {i} and note the digits.")
        for i in range(1, 6)]


def lines(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)) + "\n" for o in objs)


def count(session, project):
    return len(session.exec(select(Example.id).where(Example.project_id == project.id)).all())


def rejected_lines(report):
    return {r["line"]: r["reason"] for r in report.rejected}


def test_bad_records_are_named_by_line_and_good_ones_kept(session, project, users, tmp_path):
    from core.curate.importing import save_upload

    text = (lines(
        GOOD[0],
        '{"messages": [{"role": "user", "content": "broken"',  # 2: malformed JSON
        {"messages": [{"role": "user", "content": "only a question"}]},  # 3: prompt-only: kept, needs an answer
        GOOD[1],
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]},  # 5: empty
        {"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 6: role
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                      {"role": "assistant", "content": "c"}]},  # 7: not alternating
        {"text": "no messages at all"},  # 8: missing field
        GOOD[2],
    ))
    path = save_upload("mixed.jsonl", text.encode("utf-8"))  # annotators import what they upload
    report = import_file(session, users["annotator"], project, path, "chat")
    assert (report.n_read, report.n_imported, report.n_rejected, report.n_needs_answer) == (9, 4, 5, 1)
    bad = rejected_lines(report)
    assert set(bad) == {2, 5, 6, 7, 8}
    assert "malformed JSON" in bad[2]
    assert bad[5] == "empty field 'messages[2].content'"
    assert "unknown role 'tool'" in bad[6]
    assert "do not alternate" in bad[7]
    assert "missing field 'messages'" in bad[8]
    assert count(session, project) == 4
    rec = session.get(ImportRecord, report.import_id)
    assert (rec.user_id, rec.filename, rec.n_imported, rec.n_rejected) == (users["annotator"].id, "mixed.jsonl", 4, 5)
    assert rec.report["rejected"][0] == {"line": 2, "reason": bad[2]}


def test_alpaca_missing_and_empty_fields(session, project, users, tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text(lines({"instruction": "Explain tariffs", "input": "", "output": "A tariff is a price plan."},
                          {"instruction": "", "output": "x"},
                          {"instruction": "No output here"},  # prompt-only: imported as needing an answer
                          {"instruction": "Numbers", "output": 42},
                          {"instruction": "Empty output", "output": " "}))
    report = import_file(session, users["admin"], project, path)
    assert rejected_lines(report) == {2: "empty field 'instruction'", 4: "field 'output' must be text, got int",
                                      5: "empty field 'output'"}
    assert (report.n_imported, report.n_needs_answer) == (2, 1)


@pytest.mark.parametrize("encoding,bom,name", [
    ("utf-8", codecs.BOM_UTF8, "utf-8-sig"),
    ("utf-16-le", codecs.BOM_UTF16_LE, "utf-16"),
    ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16"),
    ("latin-1", b"", "latin-1"),
])
def test_encodings(encoding, bom, name, session, project, users, tmp_path):
    path = tmp_path / "enc.jsonl"
    recs = [chat("Où est mon compteur ?", "Il est près de la porte d'entrée, café crème."),
            chat("Ça coûte combien ?", "Le tarif dépend de votre contrat, voyez la facture.")]
    path.write_bytes(bom + lines(*recs).encode(encoding))
    report = import_file(session, users["admin"], project, path)
    assert (report.encoding, report.n_imported, report.n_rejected) == (name, 2, 0)
    texts = [e.turns[0]["content"] for e in session.exec(select(Example).order_by(Example.id)).all()]
    assert texts == ["Où est mon compteur ?", "Ça coûte combien ?"]


def test_cut_off_jsonl_keeps_complete_records(session, project, users, tmp_path):
    path = tmp_path / "cut.jsonl"
    text = lines(*GOOD[:3])
    full = text + json.dumps(GOOD[3])
    path.write_text(full[: len(text) + 30], encoding="utf-8")
    report = import_file(session, users["admin"], project, path)
    assert report.n_imported == 3
    assert report.ended_early == f"file ended early at line 4 / byte {len(text.encode())}"
    assert rejected_lines(report) == {4: "record cut off: " + report.ended_early}
    assert "ended early at line 4" in report.message


def test_cut_off_json_array(session, project, users, tmp_path):
    path = tmp_path / "cut.json"
    text = json.dumps(GOOD[:3], indent=1)
    path.write_text(text[:-40], encoding="utf-8")
    report = import_file(session, users["admin"], project, path)
    assert report.n_imported == 2
    assert report.ended_early.startswith("file ended early at line ")
    (rej,) = report.rejected
    assert rej["line"] == text[: rej["byte"]].count("\n") + 1  # the line where the cut record starts
    assert text[rej["byte"]] == "{"


def test_malformed_element_in_json_array_is_skipped(session, project, users, tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n' + json.dumps(GOOD[0]) + ',\n{"messages": [oops]},\n' + json.dumps(GOOD[1]) + '\n]\n')
    report = import_file(session, users["admin"], project, path)
    assert report.n_imported == 2
    assert [r["line"] for r in report.rejected] == [3]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(content, session, project, users, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    if not content:
        with pytest.raises(InvalidInput, match="empty"):
            import_file(session, users["admin"], project, path)
        report = import_file(session, users["admin"], project, path, "chat")
    else:
        report = import_file(session, users["admin"], project, path, "chat")
    assert report.empty and report.n_imported == 0 and "empty" in report.message


def test_strict_mode_imports_nothing_on_any_reject(session, project, users, tmp_path):
    path = tmp_path / "strict.jsonl"
    path.write_text(lines(GOOD[0], GOOD[1], {"messages": []}))
    report = import_file(session, users["admin"], project, path, strict=True)
    assert report.n_imported == 0 and rejected_lines(report) == {3: "empty field 'messages'"}
    assert "Strict mode" in report.message
    assert count(session, project) == 0
    rec = session.get(ImportRecord, report.import_id)
    assert rec.strict and rec.n_imported == 0 and rec.n_rejected == 1
    path.write_text(lines(GOOD[0], GOOD[1]))
    assert import_file(session, users["admin"], project, path, strict=True).n_imported == 2


def test_exact_duplicates_skipped_within_file_and_against_project(session, project, users, tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_text(lines(GOOD[0], GOOD[1]))
    import_file(session, users["admin"], project, first)
    variant = chat("  HOW do I read meter   number 1?", "Look at the display of METER 1 and note the digits.  ")
    second = tmp_path / "b.jsonl"
    second.write_text(lines(variant, GOOD[2], GOOD[2]))
    report = import_file(session, users["admin"], project, second)
    assert (report.n_imported, report.n_duplicates) == (1, 2)
    assert count(session, project) == 3


def test_near_duplicates_flagged(session, project, users, tmp_path):
    base = ("To submit a meter reading log in to your online account, open the readings page, type the digits "
            "shown on the display from left to right, ignore anything after the decimal point and press save. "
            "You will get an email confirming the reading within a few minutes.")
    path = tmp_path / "near.jsonl"
    path.write_text(lines(chat("How do I submit a reading?", base),
                          chat("Where can I change my tariff?", "Open the tariffs page in the app and pick one."),
                          chat("How do I submit a reading?", base.replace("a few minutes", "five minutes"))))
    report = import_file(session, users["admin"], project, path)
    assert (report.n_imported, report.n_near_duplicates) == (3, 1)
    rows = session.exec(select(Example).order_by(Example.id)).all()
    assert [r.near_duplicate_of for r in rows] == [None, None, rows[0].id]


def test_csv_with_mapping(session, project, users, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('question,answer,topic\n"What is a kWh?","A unit of energy, 1,000 watts for an hour.",'
                    'billing\n"",missing question,x\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="no column 'reply'"):
        import_file(session, users["admin"], project, path, mapping={"output": "reply"})
    # "question" is recognised as instruction without a mapping; the mapping names the rest.
    report = import_file(session, users["admin"], project, path, mapping={"output": "answer", "tags": "topic"})
    assert report.n_imported == 1 and rejected_lines(report) == {3: "empty field 'instruction'"}
    ex = session.exec(select(Example)).one()
    assert ex.tags == ["billing"] and ex.turns[1]["content"] == "A unit of energy, 1,000 watts for an hour."


def test_progress_and_roles(session, project, users, tmp_path):
    from core.curate.importing import save_upload

    path = save_upload("p.jsonl", lines(*GOOD).encode())
    seen = []
    import_file(session, users["annotator"], project, path, progress=lambda f, m: seen.append((f, m)))
    assert seen[-1][0] == 1.0 and "Imported 5 of 5" in seen[-1][1]
    users["annotator"].active = False
    with pytest.raises(PermissionDenied):
        import_file(session, users["annotator"], project, path)


def test_failure_midway_rolls_back_everything(session, project, users, tmp_path, monkeypatch):
    import core.curate.importing as importing

    monkeypatch.setattr(importing, "BATCH", 2)
    path = tmp_path / "p.jsonl"
    path.write_text(lines(*GOOD))
    calls = []

    def progress(fraction, message):
        calls.append(fraction)
        if len(calls) == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        import_file(session, users["admin"], project, path, progress=progress)
    assert count(session, project) == 0
    assert session.exec(select(ImportRecord)).all() == []


def test_cli_import(workspace, users, project, tmp_path, capsys):
    from core.cli.main import main

    path = tmp_path / "c.jsonl"
    path.write_text(lines(GOOD[0]) + '{"bad"')  # the last line is cut off
    assert main(["import", str(path), "--project", project.name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    offset = len(lines(GOOD[0]).encode())
    assert out["imported"] == 1 and out["rejected_records"] == [
        {"line": 2, "byte": offset, "reason": f"record cut off: file ended early at line 2 / byte {offset}"}]
