"""AppTest of the curation pages: every role renders them (or is refused), and the main actions work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.curate import curation as cur
from storage.models import Example

PAGES = {"pages/import_data.py": "curate", "pages/annotate.py": "curate", "pages/review_data.py": "review_data",
         "pages/dataset_versions.py": "curate"}
ORDER = ["annotator", "reviewer", "engineer", "admin"]
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # the first run may load the base model's tokenizer


def app(path, user, project):
    at = AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at.run()


def seeded(session, users, project):
    ann = users["annotator"]
    a = cur.create_example(session, ann, project, turns=[{"role": "user", "content": "**bold?** <b>x</b>"},
                                                          {"role": "assistant", "content": "Answer one here."}],
                           tags=["billing"])
    b = cur.create_example(session, ann, project, turns=[{"role": "user", "content": "Second question?"},
                                                          {"role": "assistant", "content": "Answer two here."}],
                           submit=True)
    return a, b


@pytest.mark.parametrize("page", list(PAGES))
def test_every_role_renders_or_is_refused(page, session, users, project):
    seeded(session, users, project)
    need = {"curate": "annotator", "review_data": "reviewer"}[PAGES[page]]
    for role in ORDER:
        at = app(page, users[role], project)
        assert not at.exception, (page, role, at.exception)
        refused = any("Your role cannot use this page." in e.value for e in at.error)
        assert refused == (ORDER.index(role) < ORDER.index(need)), (page, role)


def test_annotate_save_and_next_and_user_text_not_markdown(session, users, project):
    a, b = seeded(session, users, project)
    at = app("pages/annotate.py", users["annotator"], project)
    assert not at.exception
    assert not any("<b>x</b>" in m.value or "**bold?**" in m.value for m in at.markdown)
    ins = next(t for t in at.text_area if t.label == "Instruction")
    assert ins.value == "**bold?** <b>x</b>"
    next(t for t in at.text_area if t.label == "Response").set_value("A better first answer.")
    next(b for b in at.button if b.label == "Save & next").click()
    at.run()
    assert not at.exception
    session.expire_all()
    saved = session.get(Example, a.id)
    assert saved.turns[1]["content"] == "A better first answer." and saved.version == 2


def test_annotate_stale_save_shows_both_versions(session, users, project):
    a, _ = seeded(session, users, project)
    at = app("pages/annotate.py", users["annotator"], project)
    cur.save_example(session, users["reviewer"], a.id, expected_version=a.version, system="",
                     turns=[{"role": "user", "content": "**bold?** <b>x</b>"},
                            {"role": "assistant", "content": "Reviewer's answer."}])
    next(t for t in at.text_area if t.label == "Response").set_value("My answer.")
    next(b for b in at.button if b.label == "Save & next").click()
    at.run()
    assert any("changed by someone else" in e.value for e in at.error)
    codes = " ".join(c.value for c in at.code)
    assert "Reviewer's answer." in codes and "My answer." in codes
    assert next(t for t in at.text_area if t.label == "Response").value == "My answer."


def test_review_approve_and_reject(session, users, project):
    _, b = seeded(session, users, project)
    at = app("pages/review_data.py", users["reviewer"], project)
    next(x for x in at.button if x.label == "Reject").click()
    at.run()
    assert any("why" in e.value for e in at.error)
    next(t for t in at.text_input if t.label.startswith("Reason")).set_value("Too vague.")
    next(x for x in at.button if x.label == "Reject").click()
    at.run()
    session.expire_all()
    assert (session.get(Example, b.id).status, session.get(Example, b.id).reject_reason) == ("rejected", "Too vague.")


def test_import_page_from_server_path(session, users, project, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "Hi there?", "output": "Hello, how can I help?"}) + "\n{oops\n")
    at = app("pages/import_data.py", users["engineer"], project)  # server paths: engineers, inside the roots
    at.radio[0].set_value("A path on the server (big files, dataset folders)")
    at.run()
    at.text_input[0].set_value(str(path))
    at.run()
    next(x for x in at.button if x.label == "Import").click()
    at.run()
    assert not at.exception
    assert any("Imported 1 of 2" in w.value for w in at.warning) and not at.success  # one line was rejected
    assert len(session.exec(select(Example)).all()) == 1


def test_datasets_freeze_and_export(session, users, project):
    _, b = seeded(session, users, project)
    cur.review_example(session, users["reviewer"], b.id, "approve")
    at = app("pages/dataset_versions.py", users["reviewer"], project)
    at.text_input[0].set_value("first")
    next(x for x in at.button if x.label == "Freeze").click()
    at.run()
    assert not at.exception and any("Froze first" in s.value for s in at.success)
    next(x for x in at.button if x.label == "Prepare export").click()
    at.run()
    assert not at.exception


def test_import_page_guesses_csv_columns_from_the_formats_aliases(session, users, project, workspace):
    """The mapping form starts from the same well-known column names the importer uses (question/answer are
    instruction/output), so what the form shows is what an unmapped import would do."""
    folder = workspace / "imports"
    folder.mkdir(exist_ok=True)
    path = folder / "qa.csv"
    path.write_text("Question,Answer,Context\nWhy is my bill high?,Check the meter reading.,\n", encoding="utf-8")
    at = app("pages/import_data.py", users["engineer"], project)
    at.radio[0].set_value("A path on the server (big files, dataset folders)")
    at.run()
    at.text_input[0].set_value(str(path))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    picked = {key: at.selectbox(key=f"map_{key}").value for key in ("instruction", "input", "output", "system")}
    assert picked == {"instruction": "Question", "input": "Context", "output": "Answer", "system": "(none)"}
    next(x for x in at.button if x.label == "Import").click()
    at.run()
    ex = session.exec(select(Example)).one()
    assert ex.turns[0]["content"] == "Why is my bill high?" and ex.turns[-1]["content"] == "Check the meter reading."
