"""Import by path reads only the folders an admin configured, and only for engineers and admins; uploads stay
open to annotators. The refusal is one message that does not reveal whether a path exists."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.curate.importing import check_import_path, import_file, save_upload
from core.errors import PermissionDenied
from storage.models import Example

ROOT = Path(__file__).resolve().parents[1]
RECORD = json.dumps({"instruction": "How do I read my meter?", "output": "Note the digits on the display."}) + "\n"


@pytest.fixture
def default_roots(workspace, monkeypatch):
    """The admin configured nothing: the only import root is <workspace>/imports, made at start."""
    monkeypatch.delenv("FINETUNE_STUDIO_IMPORT_ROOTS")
    assert (workspace / "imports").is_dir()
    return workspace / "imports"


def _examples(session, project) -> int:
    return len(session.exec(select(Example.id).where(Example.project_id == project.id)).all())


def test_only_engineers_read_server_paths_and_only_inside_the_roots(session, users, project, default_roots,
                                                                    workspace, tmp_path):
    inside = default_roots / "d.jsonl"
    inside.write_text(RECORD, encoding="utf-8")
    outside = tmp_path / "secret.csv"
    outside.write_text("instruction,output\nsecret,value\n", encoding="utf-8")
    (default_roots / "link.csv").symlink_to(outside)  # a symlink inside that points out
    eng = users["engineer"]

    with pytest.raises(PermissionDenied, match="may not import files from the server"):
        import_file(session, users["annotator"], project, inside)
    with pytest.raises(PermissionDenied, match="may not import files from the server"):
        import_file(session, users["reviewer"], project, "/etc/passwd", "csv")

    messages = set()
    for hostile in ("/etc/passwd", workspace / "studio.db", default_roots / ".." / "studio.db",
                    default_roots / "link.csv", outside, "/etc/no-such-file", "/no/such/dir/x.jsonl"):
        with pytest.raises(PermissionDenied) as err:
            import_file(session, eng, project, hostile, "csv", mapping={"instruction": "a", "output": "b"})
        messages.add(str(err.value))
    assert len(messages) == 1  # existing or not, file or folder: the same answer
    assert "import folders" in messages.pop()
    assert _examples(session, project) == 0

    report = import_file(session, eng, project, inside)
    assert report.n_imported == 1
    # An upload is the annotators' way in: it lives in the workspace's uploads folder.
    uploaded = save_upload("mine.jsonl", RECORD.replace("meter", "bill").encode())
    assert import_file(session, users["annotator"], project, uploaded).n_imported == 1
    assert check_import_path(users["annotator"], uploaded) == uploaded.resolve()


def test_configured_roots_replace_the_default(session, users, project, workspace, tmp_path, monkeypatch):
    data = tmp_path / "datasets"
    data.mkdir()
    (data / "a.jsonl").write_text(RECORD, encoding="utf-8")
    monkeypatch.setenv("FINETUNE_STUDIO_IMPORT_ROOTS", f"{tmp_path / 'elsewhere'}{os.pathsep}{data}")
    assert import_file(session, users["engineer"], project, data / "a.jsonl").n_imported == 1
    (workspace / "imports" / "b.jsonl").write_text(RECORD, encoding="utf-8")
    with pytest.raises(PermissionDenied, match="import folders"):
        import_file(session, users["engineer"], project, workspace / "imports" / "b.jsonl")


def _page(user, project):
    at = AppTest.from_file(str(ROOT / "pages/import_data.py"), default_timeout=60)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at.run()


def test_import_page_refuses_server_files_outside_the_roots(session, users, project, default_roots, workspace):
    at = _page(users["annotator"], project)
    assert not at.exception
    assert at.radio[0].options == ["Upload a file"]  # annotators are not offered server paths at all

    at = _page(users["engineer"], project)
    at.radio[0].set_value("A path on the server (big files, dataset folders)").run()
    for hostile in ("/etc/passwd", str(workspace / "studio.db"), "/etc/no-such-file", "../studio.db"):
        at.text_input[0].set_value(hostile).run()
        assert not at.exception
        assert [e.value for e in at.error] == [at.error[0].value] and "import folders" in at.error[0].value
        assert not at.selectbox and not [b for b in at.button if b.label == "Import"]  # nothing read, not even a header
    assert _examples(session, project) == 0

    (default_roots / "d.jsonl").write_text(RECORD, encoding="utf-8")
    at.text_input[0].set_value("d.jsonl").run()  # relative to the first import folder
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    assert any("Imported 1 of 1" in s.value for s in at.success)
    assert _examples(session, project) == 1


@pytest.mark.slow
def test_cli_import_is_not_bound_by_the_web_rule(users, project, default_roots, workspace, tmp_path):
    """The CLI's user is the OS user: it reads what the OS lets it read (tests/test_path_rules.py has the rest)."""
    from tests.helpers import cli

    own = tmp_path / "own.jsonl"
    own.write_text(RECORD, encoding="utf-8")
    done = cli(workspace, "import", str(own), "--user", "engineer1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == 1
    missing = cli(workspace, "import", "/etc/no-such-file", "--format", "csv")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == "error: No file or folder /etc/no-such-file.\n"
