"""Knowledge documents: each format read (a real PDF made here), chunked under its headings, versioned, deleted
without losing what was made, and searched with the database's own full-text engine (SQLite FTS5, PostgreSQL)."""
from __future__ import annotations

import pytest
from sqlmodel import Session, select

from core.curate.docparse import MAX_CHUNK_CHARS, chunk_text, read_document
from core.curate.documents import add_document, chunks_of, delete_document, list_documents, search, versions_of
from core.errors import InvalidInput, PermissionDenied
from storage.models import Document

HANDBOOK = """# Billing

## Direct debit
You can pay by direct debit on the 1st or the 15th of each month. Change the date at brightwater.example/dd.

## Refunds
Overpayments are refunded within 10 working days to the card you used.

# Outages

Report a power cut by calling 105. Gas emergencies: 0800 111 999, day and night.
"""

PAGE = b"""<html><head><title>t</title><style>.x{color:red}</style><script>var secret=1;</script></head>
<body><nav>Home | Contact</nav><h1>Meter readings</h1><p>Submit a reading online every month.</p>
<h2>Smart meters</h2><p>Smart meters send readings <b>automatically</b> every half hour.</p></body></html>"""


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def test_each_format_is_read_as_text_with_its_headings():
    kind, text = read_document("handbook.md", HANDBOOK.encode())
    assert kind == "markdown" and "## Refunds" in text
    kind, text = read_document("notes.txt", "Plain words.\n\nSecond paragraph.".encode("utf-8"))
    assert kind == "text" and text == "Plain words.\n\nSecond paragraph."
    kind, text = read_document("meters.html", PAGE)
    assert kind == "html"
    assert "# Meter readings" in text and "## Smart meters" in text and "automatically" in text
    assert "secret" not in text and "color:red" not in text and "Contact" not in text
    pdf = make_pdf(["Tariffs change on 1 April.", "Complaints go to the ombudsman."])
    kind, text = read_document("policy.pdf", pdf)
    assert kind == "pdf"
    assert "# Page 1" in text and "Tariffs change on 1 April." in text and "ombudsman" in text


@pytest.mark.parametrize("name, data, message", [
    ("slides.pptx", b"x", r"Markdown \(.md\), plain text"),
    ("empty.md", b"", "is empty"),
    ("broken.pdf", b"%PDF-1.4 not really", "not a readable PDF"),
    ("scan.pdf", None, "holds no text"),
])
def test_bad_documents_are_refused_with_a_reason(name, data, message):
    if data is None:
        data = make_pdf([""])
    with pytest.raises(InvalidInput, match=message):
        read_document(name, data)


def test_chunks_follow_headings_and_stay_under_the_limit():
    chunks = chunk_text(HANDBOOK)
    assert [(c.ordinal, c.heading) for c in chunks] == [
        (1, "Billing > Direct debit"), (2, "Billing > Refunds"), (3, "Outages")]
    assert chunks[2].text.startswith("Report a power cut")
    long_text = "# Terms\n\n" + " ".join(f"Sentence number {i} of the terms." for i in range(400))
    long_chunks = chunk_text(long_text)
    assert len(long_chunks) > 5 and all(len(c.text) <= MAX_CHUNK_CHARS for c in long_chunks)
    assert all(c.heading == "Terms" for c in long_chunks)
    assert " ".join(c.text for c in long_chunks).split() == long_text.split()[2:]  # nothing lost or doubled


def test_upload_versions_delete_and_search(session, users, project):
    admin = users["admin"]
    doc = add_document(session, admin, project, "handbook.md", HANDBOOK.encode())
    assert (doc.version, doc.n_chunks, doc.kind) == (1, 3, "markdown")
    assert [c.heading for c in chunks_of(session, doc)] == ["Billing > Direct debit", "Billing > Refunds", "Outages"]

    hits = search(session, project, "how fast is my refund?")
    assert hits and hits[0].label == "handbook.md §2" and "10 working days" in hits[0].text
    assert search(session, project, "gas emergency number")[0].ordinal == 3
    assert search(session, project, "   ") == [] and search(session, project, "zebra") == []

    with pytest.raises(InvalidInput, match="unchanged"):
        add_document(session, admin, project, "handbook.md", HANDBOOK.encode())
    v2 = add_document(session, admin, project, "handbook.md",
                      HANDBOOK.replace("10 working days", "5 working days").encode())
    assert v2.version == 2 and [d.version for d in versions_of(session, project, "handbook.md")] == [2, 1]
    assert [d.id for d in list_documents(session, project)] == [v2.id]
    refund = search(session, project, "refund")
    assert len(refund) == 1 and refund[0].version == 2 and "5 working days" in refund[0].text  # old version unsearched

    add_document(session, admin, project, "meters.html", PAGE)
    assert search(session, project, "smart meter readings", k=1)[0].document == "meters.html"
    only = search(session, project, "readings refund", document_ids=[v2.id])
    assert only and {h.document for h in only} == {"handbook.md"}

    assert delete_document(session, admin, project, "handbook.md") == 2
    assert [d.name for d in list_documents(session, project)] == ["meters.html"]
    assert search(session, project, "refund") == []
    kept = session.exec(select(Document).where(Document.name == "handbook.md")).all()
    assert len(kept) == 2 and all(d.deleted_at is not None for d in kept)  # rows kept for the origins made from them
    again = add_document(session, admin, project, "handbook.md", HANDBOOK.encode())
    assert again.version == 3 and search(session, project, "refund")[0].version == 3


def test_annotators_upload_and_a_disabled_account_cannot(session, users, project):
    annotator = users["annotator"]
    assert add_document(session, annotator, project, "faq.md", b"# Q\n\nA.").version == 1
    annotator.active = False
    with pytest.raises(PermissionDenied):
        add_document(session, annotator, project, "faq2.md", b"# Q\n\nB.")


def test_the_demo_project_starts_with_its_fact_sheet(session, demo):
    docs = list_documents(session, demo)
    assert [d.name for d in docs] == ["demo_fact_sheet.md"] and docs[0].n_chunks > 3
    assert search(session, demo, "smell gas emergency")


def test_search_on_postgresql(postgres_url, tmp_path, monkeypatch):
    from core.accounts import first_admin
    from core.projects import create_project
    from core.startup import init_workspace
    from storage.db import get_engine, reset_engines

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    reset_engines()
    try:
        init_workspace()
        with Session(get_engine(), expire_on_commit=False) as s:
            admin = first_admin(s)
            project = create_project(s, admin, "pg-docs", "", "")
            add_document(s, admin, project, "handbook.md", HANDBOOK.encode())
            hits = search(s, project, "how fast is my refund?")
            assert hits[0].label == "handbook.md §2"
            assert search(s, project, "the and of") == []  # stop words only: nothing, and no error
    finally:
        reset_engines()


@pytest.mark.slow
def test_the_command_line_adds_lists_searches_and_deletes_documents(tmp_path):
    import json

    from tests.helpers import cli

    ws = tmp_path / "ws"
    assert cli(ws, "init", "--no-demo").returncode == 0
    assert cli(ws, "projects", "--create", "docs").returncode == 0
    (tmp_path / "handbook.md").write_text(HANDBOOK)
    (tmp_path / "slides.pptx").write_bytes(b"x")
    added = cli(ws, "docs", "add", str(tmp_path / "handbook.md"), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == [{"id": 1, "name": "handbook.md", "version": 1, "chunks": 3}]
    refused = cli(ws, "docs", "add", str(tmp_path / "slides.pptx"))
    assert refused.returncode == 1 and "is not a kind of document the studio reads" in refused.stderr
    hits = json.loads(cli(ws, "docs", "search", "refund", "--json").stdout)
    assert [h["passage"] for h in hits] == ["handbook.md §2"]
    assert "handbook.md" in cli(ws, "docs", "list").stdout
    assert cli(ws, "docs", "delete", "handbook.md").returncode == 0
    assert json.loads(cli(ws, "docs", "list", "--json").stdout) == []
    unknown = cli(ws, "docs", "generate", "nope.md")
    assert unknown.returncode == 1 and "No document called nope.md" in unknown.stderr
