"""The Documents page: the list of current documents, search hits named by passage, chunks to read, delete."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.curate.documents import add_document, list_documents

ROOT = Path(__file__).resolve().parents[1]
FAQ = b"# Refunds\n\nOverpayments are refunded within 10 working days.\n\n# Outages\n\nCall 105 in a power cut.\n"


def _page(user, project) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "documents.py"), default_timeout=60)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at


def test_documents_page_lists_searches_shows_chunks_and_deletes(session, users, project):
    admin = users["admin"]
    at = _page(admin, project).run()
    assert not at.exception
    assert any("No documents yet" in i.value for i in at.info)

    add_document(session, admin, project, "faq.md", FAQ)
    add_document(session, admin, project, "faq.md", FAQ.replace(b"10 working", b"5 working"))
    add_document(session, admin, project, "notes.txt", b"Meter readings are due monthly.")
    at = _page(admin, project).run()
    table = at.dataframe[0].value
    assert list(table["name"]) == ["faq.md", "notes.txt"] and list(table["version"]) == [2, 1]
    assert [e.label for e in at.expander] == ["§1 Refunds", "§2 Outages"]
    assert "5 working days" in at.expander[0].text[0].value

    at.selectbox(key="documents_version_faq.md").select_index(1).run()  # the older version reads too
    assert "10 working days" in at.expander[0].text[0].value

    at.text_input(key="documents_q").input("refund").run()
    hits = at.dataframe[0].value
    assert list(hits["passage"]) == ["faq.md §1"] and "5 working days" in hits["text"][0]
    at.text_input(key="documents_q").input("zebra").run()
    assert any("No passage matches" in c.value for c in at.caption)

    at.button(key="documents_delete").click().run()
    assert not at.exception
    session.expire_all()
    assert [d.name for d in list_documents(session, project)] == ["notes.txt"]


def test_a_reviewer_reads_documents_too(session, users, project):
    add_document(session, users["admin"], project, "faq.md", FAQ)
    at = _page(users["reviewer"], project).run()
    assert not at.exception and [e.label for e in at.expander] == ["§1 Refunds", "§2 Outages"]


def test_generation_section_refuses_nothing_chosen_and_shows_what_a_job_made_and_withheld(session, users, project):
    from storage.models import Job

    eng = users["engineer"]
    add_document(session, users["admin"], project, "faq.md", FAQ)
    done = Job(project_id=project.id, kind="generate_drafts", action="evaluate", name="questions from documents",
               status="succeeded", run_dir="/nonexistent", module="core.evaluate.docdraft_job", created_by=eng.id,
               config={}, result={"drafts": 3, "sources": 2, "unparseable": 1,
                                  "withheld": {"eval_leak": 1, "split_leak": 0, "duplicate": 2, "repeated": 0}})
    stopped = Job(project_id=project.id, kind="generate_drafts", action="evaluate", name="questions again",
                  status="canceled", run_dir="/nonexistent2", module="core.evaluate.docdraft_job", created_by=eng.id,
                  config={}, error="Canceled; the drafts made so far are kept.")
    session.add_all([done, stopped])
    session.commit()
    at = _page(eng, project).run()
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert ("3 draft(s) made from 2 chunk(s); 1 model answer(s) held no question; withheld: 1 repeats an eval "
            "prompt, 2 an example already has the same text.") in captions
    assert [b.label for b in at.button if b.label.startswith("Resume")] == ["Resume"]

    at.multiselect[0].set_value([])  # a form's values go in with its submit button's click
    form_button = next(b for b in at.button if b.label == "Generate drafts")
    form_button.click().run()
    assert any("Nothing to generate" in e.value for e in at.error)


def test_annotators_do_not_see_the_generation_section(session, users, project):
    add_document(session, users["admin"], project, "faq.md", FAQ)
    at = _page(users["annotator"], project).run()
    assert not at.exception and "Generate drafts from documents" not in [h.value for h in at.subheader]
