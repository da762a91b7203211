"""Every importer (examples, preference pairs, eval-set prompts) reads through the example importer's reader and so
shares its record limits: nesting depth, size per record, CSV field size. Bad input is one clear message naming
the line; the CLI never shows a traceback and nothing already saved is lost."""
from __future__ import annotations

import json

import pytest
from sqlmodel import select

import core.curate.formats as formats
from core.curate.formats import limits
from core.curate.formats import Rejected, read_file
from core.curate.preference_versions import import_preference_file, list_preference_versions, read_preference_file
from core.errors import InvalidInput
from core.evaluate.evalsets import create_eval_set_from_file, list_eval_sets, parse_prompt_file
from storage.models import EvalSet, PreferenceVersion
from tests.helpers import cli

DEEP = "[" * 100_000 + "]" * 100_000
PAIR = json.dumps({"prompt": "How do I pay?", "chosen": "Online or by phone.", "rejected": "No idea."})
PROMPT = json.dumps({"prompt": "How do I read my meter?"})


def _deep_pref() -> bytes:
    return (PAIR + "\n" + '{"prompt": ' + DEEP + ', "chosen": "a", "rejected": "b"}\n' + PAIR + "\n").encode()


def test_a_deeply_nested_preference_row_is_a_named_bad_row():
    with pytest.raises(InvalidInput) as err:
        read_preference_file(_deep_pref(), "prefs.jsonl")
    assert str(err.value) == f"prefs.jsonl line 2: {formats.TOO_DEEP}."
    read = read_preference_file(_deep_pref(), "prefs.jsonl", skip_bad=True)
    assert len(read["pairs"]) == 2 and read["rejected"] == 1 and read["errors"] == [f"line 2: {formats.TOO_DEEP}"]


def test_a_deeply_nested_eval_set_row_or_csv_cell_is_a_named_bad_row():
    with pytest.raises(InvalidInput, match=r"^line 2: value nested too deeply"):
        parse_prompt_file(PROMPT + "\n" + '{"prompt": ' + DEEP + "}\n", "p.jsonl")
    deep = '[{"role": "user", "content": ' + "[" * 5000 + "]" * 5000 + "}]"  # chat messages as JSON text
    cell = '"' + deep.replace('"', '""') + '"'
    with pytest.raises(InvalidInput, match=r"^line 3: .*nested too deeply"):
        parse_prompt_file("prompt,reference\nHi,Hello\n" + cell + ",x\n", "p.csv")
    with pytest.raises(InvalidInput, match=r"^line 2: .*nested too deeply"):
        parse_prompt_file("prompt,checks\nHi," + cell + "\n", "p.csv")


def test_every_importer_has_the_same_size_limit_per_record(monkeypatch):
    monkeypatch.setattr(limits, "MAX_RECORD_BYTES", 2000)
    big_pair = json.dumps({"prompt": "q", "chosen": "a" * 5000, "rejected": "b"})
    with pytest.raises(InvalidInput, match=r"^p.jsonl line 2: record too large: .*2,000 bytes per record"):
        read_preference_file((PAIR + "\n" + big_pair + "\n").encode(), "p.jsonl")
    with pytest.raises(InvalidInput, match=r"^line 2: record too large"):
        parse_prompt_file(PROMPT + "\n" + json.dumps({"prompt": "x" * 5000}) + "\n", "p.jsonl")
    with pytest.raises(InvalidInput, match=r"^line 3: unreadable CSV row: field larger than field limit"):
        parse_prompt_file("prompt\nHi\n" + "y" * 5000 + "\n", "p.csv")


def test_deep_tags_in_an_example_csv_reject_the_row_not_the_import(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,output,tags\nq1,a1,x\nq2,a2,"' + "[" * 5000 + "]" * 5000 + '"\nq3,a3,y\n',
                    encoding="utf-8")
    items = list(read_file(path, "csv", mapping={"instruction": "instruction", "output": "output", "tags": "tags"}))
    assert [type(i).__name__ for i in items] == ["Parsed", "Rejected", "Parsed"]
    assert "nested too deeply" in items[1].reason and items[1].line == 3


def test_read_rows_gives_raw_rows_with_lines_for_every_container(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.curate.formats import read_rows

    rows = [{"prompt": "a"}, {"prompt": "b"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "r.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    (tmp_path / "r.csv").write_text("prompt\na\nb\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    for name in ("r.jsonl", "r.json", "r.csv", "r.parquet"):
        got = list(read_rows(tmp_path / name, name))
        assert [r.value for r in got] == rows, name
        assert all(r.line for r in got)
        data = list(read_rows((tmp_path / name).read_bytes(), name))  # an upload's bytes read the same way
        assert [r.value for r in data] == rows, name
    assert isinstance(next(iter(read_rows(b"{oops\n", "x.jsonl"))), Rejected)


@pytest.mark.slow
def test_cli_refuses_deep_files_in_one_line_and_keeps_what_was_saved(workspace, session, project, users, tmp_path):
    eng = users["engineer"]
    kept = create_eval_set_from_file(session, eng, project.id, "kept", PROMPT.encode(), "p.jsonl")
    deep_prefs = tmp_path / "deep.jsonl"
    deep_prefs.write_bytes(_deep_pref())
    out = cli(workspace, "prefs", "import", str(deep_prefs), "--user", "engineer1")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr == f"error: deep.jsonl line 2: {formats.TOO_DEEP}.\n"

    deep_prompts = tmp_path / "deep_prompts.jsonl"
    deep_prompts.write_text(PROMPT + "\n" + '{"prompt": ' + DEEP + "}\n", encoding="utf-8")
    out = cli(workspace, "evalsets", "--create", "deep", "--from-file", str(deep_prompts), "--user", "engineer1")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.startswith("error: ") and "line 2: value nested too deeply" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    session.expire_all()
    assert [e.name for e in session.exec(select(EvalSet))] == [kept.name]
    assert session.exec(select(PreferenceVersion)).all() == []
    assert [r["name"] for r in list_eval_sets(session, eng, project.id)] == ["kept"]
    assert list_preference_versions(session, eng, project.id) == []
    ok = import_preference_file(session, eng, project.id, "fine", (PAIR + "\n").encode(), "p.jsonl")
    assert ok.n_pairs == 1
