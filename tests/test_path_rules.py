"""Two rules for paths, one each: every CLI file argument is read as the OS user running the CLI (any readable
path; a clear message for a missing or unreadable one), and every path a web user types stays inside the import
folders, refused alike for a symbolic link, ".." or a missing file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.curate.importing import check_import_path, import_file
from core.errors import PermissionDenied
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[1]
RECORD = json.dumps({"instruction": "How do I read my meter?", "output": "Note the digits on the display."}) + "\n"
PAIR = json.dumps({"prompt": "How do I pay?", "chosen": "Online or by phone.", "rejected": "No idea."}) + "\n"
PROMPT = json.dumps({"prompt": "When is my bill due?"}) + "\n"


@pytest.fixture
def roots(workspace, monkeypatch):
    monkeypatch.delenv("FINETUNE_STUDIO_IMPORT_ROOTS")
    return workspace / "imports"


@pytest.mark.slow
def test_every_cli_file_argument_reads_any_file_the_os_user_can_read(workspace, users, project, roots, tmp_path):
    home = tmp_path / "my data"  # outside every import folder, as a user's own files are
    home.mkdir()
    (home / "d.jsonl").write_text(RECORD, encoding="utf-8")
    (home / "prefs.jsonl").write_text(PAIR, encoding="utf-8")
    (home / "prompts.jsonl").write_text(PROMPT, encoding="utf-8")

    done = cli(workspace, "import", str(home / "d.jsonl"), "--user", "engineer1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == 1
    # The import roles of the web (import_server_files) are not the CLI's: an annotator's shell reads its own files.
    (home / "e.jsonl").write_text(RECORD.replace("meter", "bill"), encoding="utf-8")
    annotator = cli(workspace, "import", str(home / "e.jsonl"), "--user", "annotator1", "--json")
    assert annotator.returncode == 0 and json.loads(annotator.stdout)["imported"] == 1, annotator.stderr
    prefs = cli(workspace, "prefs", "import", str(home / "prefs.jsonl"), "--user", "engineer1", "--json")
    assert prefs.returncode == 0, prefs.stderr
    assert json.loads(prefs.stdout)["pairs"] == 1
    evalset = cli(workspace, "evalsets", "--create", "mine", "--from-file", str(home / "prompts.jsonl"),
                  "--user", "engineer1", "--json")
    assert evalset.returncode == 0, evalset.stderr
    assert json.loads(evalset.stdout)["prompts"] == 1

    missing = str(home / "none.jsonl")
    for args, what in ((["import", missing], "file or folder"), (["prefs", "import", missing], "file"),
                       (["evalsets", "--create", "x", "--from-file", missing], "file")):
        out = cli(workspace, *args, "--user", "engineer1")
        assert out.returncode == 1 and out.stderr == f"error: No {what} {missing}.\n", (args, out.stderr)
    folder = cli(workspace, "prefs", "import", str(home), "--user", "engineer1")
    assert folder.returncode == 1 and folder.stderr == f"error: {home} is a folder; give a file.\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_cli_file_is_one_clear_line(workspace, users, project, tmp_path):
    locked = tmp_path / "locked.jsonl"
    locked.write_text(PROMPT, encoding="utf-8")
    locked.chmod(0)
    out = cli(workspace, "evalsets", "--create", "x", "--from-file", str(locked), "--user", "engineer1")
    assert out.returncode == 1 and out.stderr == f"error: Cannot read {locked}: Permission denied.\n"


def test_the_web_rule_refuses_links_dotdot_and_missing_files_alike(session, users, project, roots, tmp_path):
    (roots / "d.jsonl").write_text(RECORD, encoding="utf-8")
    (roots / "sub").mkdir()
    (roots / "inner-link.jsonl").symlink_to(roots / "d.jsonl")  # a link, even one that stays inside
    (roots / "linked-dir").symlink_to(roots / "sub")
    outside = tmp_path / "outside.jsonl"
    outside.write_text(RECORD, encoding="utf-8")
    eng = users["engineer"]
    messages = set()
    for hostile in (roots / "inner-link.jsonl", roots / "linked-dir" / "x.jsonl", roots / "sub" / ".." / "d.jsonl",
                    roots / "missing.jsonl", outside, "/etc/passwd"):
        with pytest.raises(PermissionDenied) as err:
            check_import_path(eng, hostile)
        messages.add(str(err.value))
    assert len(messages) == 1 and "symbolic links or '..'" in messages.pop()
    assert check_import_path(eng, roots / "d.jsonl") == roots / "d.jsonl"
    assert import_file(session, eng, project, roots / "d.jsonl").n_imported == 1


def test_the_import_page_refuses_links_dotdot_and_missing_files_alike(session, users, project, roots):
    (roots / "d.jsonl").write_text(RECORD, encoding="utf-8")
    (roots / "sub").mkdir()
    (roots / "inner-link.jsonl").symlink_to(roots / "d.jsonl")
    at = AppTest.from_file(str(ROOT / "pages/import_data.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    at.session_state["project_id"] = project.id
    at.run()
    at.radio[0].set_value("A path on the server (big files, dataset folders)").run()
    errors = set()
    for typed in ("inner-link.jsonl", "sub/../d.jsonl", "missing.jsonl"):
        at.text_input[0].set_value(typed).run()
        assert not at.exception
        assert len(at.error) == 1, typed
        errors.add(at.error[0].value)
        assert not [b for b in at.button if b.label == "Import"]  # nothing read
    assert len(errors) == 1 and "import folders" in errors.pop()
    at.text_input[0].set_value("d.jsonl").run()
    assert [b for b in at.button if b.label == "Import"]
