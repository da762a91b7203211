"""Hostile names: every name that becomes a file name is made safe in one place (core.names.safe_file_name), and a
new name with control characters or over the length limit is refused with a clear message, nothing saved lost."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.curate.datasets import export_file, freeze_version, list_versions
from core.curate.formats import EXPORT_FORMATS
from core.curate.importing import save_upload
from core.curate.preference_versions import import_preference_file
from core.errors import InvalidInput
from core.evaluate.evalsets import create_eval_set_from_file, list_eval_sets
from core.names import FILE_NAME_BYTES, MAX_NAME_CHARS, safe_file_name
from storage.models import DatasetVersion
from tests.fixtures_models import make_dataset_version

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ["v" * 200, "bad\x00name", "../../etc/passwd", "..", ".", "a/b\\c", "line\nbreak", "\u202eexe.txt",
           "é" * 120, "   ", "<img src=x onerror=alert(1)>", "CON:*?|"]


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_file_name_is_one_short_plain_name(name, tmp_path):
    safe = safe_file_name(name, "-csv.csv")
    stem = safe.removesuffix("-csv.csv")
    assert stem not in ("", ".", "..") and not stem.startswith(".")
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe and "\n" not in safe
    assert "\u202e" not in safe
    assert len(stem.encode()) <= FILE_NAME_BYTES
    (tmp_path / safe).write_text("ok")  # the filesystem takes it
    assert [p.name for p in tmp_path.iterdir()] == [safe]


@pytest.mark.parametrize("name", ["v" * 250, "bad\x00name", "../up/and out"])
def test_a_saved_version_with_a_hostile_name_exports_in_every_format(name, session, users, project):
    """Versions named before the length rule existed still export: the file name is made safe, each format its own."""
    version = make_dataset_version(session, project, users["engineer"], n_train=3, n_validation=1, name=name)
    names = set()
    for fmt in EXPORT_FORMATS:
        path = export_file(session, users["engineer"], project, fmt, version_id=version.id)
        assert path.is_file() and len(path.name.encode()) < 160, path.name
        assert path.parent.parent.name == "exports"  # nothing written outside the exports folder
        names.add(path.name)
        assert f"-{fmt}." in path.name
        if fmt == "hf_disk":
            assert path.suffix == ".zip" and zipfile.is_zipfile(path)
    assert len(names) == len(EXPORT_FORMATS)  # each format downloads under its own name


def test_new_names_with_control_characters_or_too_long_are_refused(session, users, project):
    eng = users["engineer"]
    make_dataset_version(session, project, eng, n_train=3, n_validation=1, name="old")
    from sqlmodel import select

    from storage.models import Example
    for ex in session.exec(select(Example)).all():
        ex.status = "approved"
    session.commit()
    for bad, words in (("x" * (MAX_NAME_CHARS + 1), f"at most {MAX_NAME_CHARS} characters"),
                       ("two\nlines", "control characters"), ("nul\x00", "control characters")):
        with pytest.raises(InvalidInput, match=words):
            freeze_version(session, eng, project, bad)
        with pytest.raises(InvalidInput, match=words):
            create_eval_set_from_file(session, eng, project.id, bad, b'{"prompt": "hi"}\n', "p.jsonl")
        with pytest.raises(InvalidInput, match=words):
            import_preference_file(session, eng, project.id, bad,
                                   json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}).encode(), "p.jsonl")
    assert [v.name for v in list_versions(session, project)] == ["old"]  # what was saved is still there
    assert list_eval_sets(session, eng, project.id) == []
    assert freeze_version(session, eng, project, "x" * MAX_NAME_CHARS).name == "x" * MAX_NAME_CHARS


def test_an_uploaded_file_with_a_hostile_name_is_stored_safely(workspace):
    for name in ("u" * 300 + ".jsonl", "..", "../../x.jsonl", "a\x00b.csv"):
        path = save_upload(name, b"{}\n")
        assert path.is_file() and path.read_bytes() == b"{}\n"
        assert path.parent.parent == workspace / "uploads"
    assert save_upload("u" * 300 + ".jsonl", b"").name.endswith(".jsonl")


def test_datasets_page_downloads_each_format_under_its_own_name(session, users, project):
    version = make_dataset_version(session, project, users["engineer"], n_train=3, n_validation=1, name="v" * 200)
    at = AppTest.from_file(str(ROOT / "pages/dataset_versions.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    at.session_state["project_id"] = project.id
    at.run()
    assert not at.exception
    seen = {}
    for fmt in ("alpaca_jsonl", "chat_jsonl", "alpaca_json", "sharegpt"):
        next(s for s in at.selectbox if s.label == "Format").set_value(fmt).run()
        next(b for b in at.button if b.label == "Prepare export").click().run()
        assert not at.exception
        ready = [t.value for t in at.text if t.value.startswith("Ready: ")]
        assert ready, [t.value for t in at.text]
        seen[fmt] = ready[0].removeprefix("Ready: ")
    assert len(set(seen.values())) == 4, seen
    for fmt, name in seen.items():
        assert fmt in name and len(name.encode()) < 160
    assert session.get(DatasetVersion, version.id).name == "v" * 200
    assert os.sep not in "".join(seen.values())


def test_projects_and_runs_refuse_hostile_names_too(session, users, project):
    from core.projects import create_project
    from core.train.config import TrainConfig
    from core.train.runs import launch

    for bad in ("p" * (MAX_NAME_CHARS + 1), "tab\there"):
        with pytest.raises(InvalidInput, match="characters"):
            create_project(session, users["admin"], bad)
        with pytest.raises(InvalidInput, match="characters"):
            launch(session, users["engineer"], project.id, TrainConfig(), name=bad)


def test_run_folders_are_named_safely(session, users, project):
    from core.jobs.queue import submit

    job = submit(session, users["engineer"], project_id=project.id, kind="train", action="train",
                 name="\x00" + "é" * 300 + "/../x", config={}, module="core.nothing")
    folder = Path(job.run_dir)
    assert folder.parent.name == "runs" and folder.is_dir() and len(folder.name.encode()) <= 46


def test_an_export_folder_with_a_long_name_has_a_staging_folder_the_filesystem_takes(tmp_path):
    from core.ship.export_job import staging_dir

    long_a, long_b = tmp_path / ("a" * 250 + "1"), tmp_path / ("a" * 250 + "2")
    for out in (long_a, long_b, tmp_path / "plain"):
        staging = staging_dir(out)
        assert staging.parent == tmp_path and staging.name.startswith(".")
        staging.mkdir()  # "File name too long" before: ".<250 characters>.export-tmp" is 263 bytes
    assert staging_dir(long_a) != staging_dir(long_b)
