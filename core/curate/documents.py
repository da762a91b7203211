"""A project's knowledge documents: upload (a new version per upload of a known name), list, read, delete, search.

Search runs on the database's own full-text engine, so ranking is a well-kept implementation's: SQLite's FTS5 with
its bm25 (the ``documentchunk_fts`` table the 0013 migration keeps in step with triggers) or PostgreSQL's
``to_tsvector``/``ts_rank`` over a GIN index. A query is cut into words and any of them may match; only the current,
undeleted version of each document is searched.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import text as sql_text, update
from sqlmodel import Session, select

from core.accounts import require
from core.curate.docparse import chunk_text, read_document
from core.errors import InvalidInput, NotFound
from core.names import check_name
from storage.models import Document, DocumentChunk, Project, User, utcnow

MAX_QUERY_WORDS = 32


@dataclass
class Hit:
    chunk_id: int
    document_id: int
    document: str  # the document's name
    version: int
    ordinal: int  # the chunk's § number
    heading: str
    text: str
    score: float  # higher is more relevant (FTS5's bm25 negated; PostgreSQL's ts_rank)

    @property
    def label(self) -> str:
        """How a passage is named to people: "handbook.md §4"."""
        return f"{self.document} §{self.ordinal}"


def add_document(session: Session, user: User, project: Project, file_name: str, data: bytes) -> Document:
    """Read, chunk and store an uploaded document. A name the project already has becomes its next version (the
    older one stays, no longer searched); the same bytes as the current version are refused as unchanged."""
    require(user, "curate")
    name = check_name(file_name, "document")
    kind, text = read_document(name, data)
    digest = hashlib.sha256(data).hexdigest()
    previous = session.exec(select(Document).where(Document.project_id == project.id, Document.name == name)
                            .order_by(Document.version.desc())).first()
    if previous is not None and previous.current and previous.deleted_at is None \
            and previous.content_hash == digest:
        raise InvalidInput(f"{name!r} is unchanged: version {previous.version} has the same content.")
    chunks = chunk_text(text)
    session.exec(update(Document).where(Document.project_id == project.id, Document.name == name)
                 .values(current=False))
    doc = Document(project_id=project.id, name=name, version=(previous.version + 1) if previous else 1, kind=kind,
                   content_hash=digest, size_bytes=len(data), text=text, n_chunks=len(chunks), current=True,
                   created_by=user.id)
    session.add(doc)
    session.flush()
    session.add_all([DocumentChunk(document_id=doc.id, ordinal=c.ordinal, heading=c.heading[:500], text=c.text)
                     for c in chunks])
    session.commit()
    session.refresh(doc)
    return doc


def list_documents(session: Session, project: Project, *, include_deleted: bool = False) -> list[Document]:
    """The current version of each document of ``project``, by name."""
    query = select(Document).where(Document.project_id == project.id, Document.current)
    if not include_deleted:
        query = query.where(Document.deleted_at.is_(None))
    return list(session.exec(query.order_by(Document.name)))


def versions_of(session: Session, project: Project, name: str) -> list[Document]:
    """Every version of the document called ``name``, newest first."""
    return list(session.exec(select(Document).where(Document.project_id == project.id, Document.name == name)
                             .order_by(Document.version.desc())))


def get_document(session: Session, project: Project, document_id: int) -> Document:
    doc = session.get(Document, document_id)
    if doc is None or doc.project_id != project.id:
        raise NotFound(f"Document {document_id} is not in this project.")
    return doc


def chunks_of(session: Session, document: Document) -> list[DocumentChunk]:
    return list(session.exec(select(DocumentChunk).where(DocumentChunk.document_id == document.id)
                             .order_by(DocumentChunk.ordinal)))


def delete_document(session: Session, user: User, project: Project, name: str) -> int:
    """Take the document ``name`` (every version) out of the list and of search. The rows stay, so drafts made from
    it keep their origin; uploading the name again starts a new version. Returns the versions marked deleted."""
    require(user, "curate")
    versions = [d for d in versions_of(session, project, name) if d.deleted_at is None]
    if not versions:
        raise NotFound(f"No document called {name!r} in this project.")
    for doc in versions:
        doc.deleted_at, doc.deleted_by = utcnow(), user.id
        session.add(doc)
    session.commit()
    return len(versions)


def query_words(query: str) -> list[str]:
    """The words of a search query (letters and digits), each at most once, in order."""
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", query or "")))
    return words[:MAX_QUERY_WORDS]


_SQLITE_SEARCH = """
SELECT c.id, d.id, d.name, d.version, c.ordinal, c.heading, c.text, -bm25(documentchunk_fts) AS score
FROM documentchunk_fts JOIN documentchunk c ON c.id = documentchunk_fts.rowid JOIN document d ON d.id = c.document_id
WHERE documentchunk_fts MATCH :match AND d.project_id = :project AND d.current AND d.deleted_at IS NULL {only}
ORDER BY bm25(documentchunk_fts) LIMIT :k"""
_POSTGRES_SEARCH = """
SELECT c.id, d.id, d.name, d.version, c.ordinal, c.heading, c.text,
       ts_rank(to_tsvector('english', c.heading || ' ' || c.text), to_tsquery('english', :match)) AS score
FROM documentchunk c JOIN document d ON d.id = c.document_id
WHERE to_tsvector('english', c.heading || ' ' || c.text) @@ to_tsquery('english', :match)
  AND d.project_id = :project AND d.current AND d.deleted_at IS NULL {only}
ORDER BY score DESC, c.id LIMIT :k"""


def search(session: Session, project: Project, query: str, k: int = 5,
           document_ids: list[int] | None = None) -> list[Hit]:
    """The ``k`` chunks of ``project``'s current documents that best match ``query`` (any of its words), best
    first; ``document_ids`` limits the search to those documents. An empty query finds nothing."""
    words = query_words(query)
    if not words or k <= 0:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    match = " | ".join(words) if postgres else " OR ".join(f'"{w}"' for w in words)
    params: dict = {"match": match, "project": project.id, "k": int(k)}
    only = ""
    if document_ids is not None:
        if not document_ids:
            return []
        only = "AND d.id IN (" + ", ".join(f":d{i}" for i in range(len(document_ids))) + ")"
        params.update({f"d{i}": int(x) for i, x in enumerate(document_ids)})
    rows = session.execute(sql_text((_POSTGRES_SEARCH if postgres else _SQLITE_SEARCH).format(only=only)), params)
    return [Hit(chunk_id=r[0], document_id=r[1], document=r[2], version=r[3], ordinal=r[4], heading=r[5], text=r[6],
                score=float(r[7])) for r in rows]
