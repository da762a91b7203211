"""Import a dataset file into a project: all or nothing, a report of every rejected record, an ImportRecord.

Pipeline: read (core.curate.formats streams records) -> skip exact duplicates (content hash, against the file
and the project) -> insert in batches -> flag near duplicates (core.curate.dedup MinHash LSH) -> record the
import. Good records are never lost because of bad ones (unless ``strict``: then nothing is imported
when anything is rejected).

Each batch is its own short transaction, so a 300,000-record file never holds SQLite's write lock for more than
one batch: annotators keep saving and jobs keep heartbeating while it runs. The rows stay hidden meanwhile (the
ImportRecord is pending, see storage.models.visible_examples); one quick update of the record shows them all,
and an error half-way deletes them again, so users see the whole import or nothing of it.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import bindparam, delete, insert, select, update
from sqlmodel import Session

from core.accounts import require
from core.curate.curation import estimate_tokens
from core.curate.dedup import NearDuplicateIndex, near_text, record_keys, record_text
from core.errors import InvalidInput, PermissionDenied
from core.curate.formats import Parsed, ReadInfo, read_file
from storage.models import (Example, ExampleStatus, ImportRecord, ImportStatus, Project, User, utcnow,
                            visible_examples)

# Records parsed, hashed and MinHashed together, then written in one transaction. 500 rows hold SQLite's write lock
# ~40 ms, and the next batch is parsed before the lock is taken again, so saves beside a long import wait little
# (bench/concurrency.py); bigger batches save little time (8.0 s vs 8.75 s for 40,000 records at 2,000).
BATCH = 500
WRITE_BATCH = 500  # rows per write transaction (a batch never holds the lock for more than this many rows)
INDEX_PAGE = 5000  # existing examples read per query when the near-duplicate index is built
MAX_REPORTED = 1000  # rejected records listed in the stored report (all are counted)

Progress = Callable[[float, str], None]


@dataclass
class ImportReport:
    """What happened to a file: counts, the rejected records with line and reason, the encoding used."""

    import_id: int | None
    filename: str
    format: str
    encoding: str
    strict: bool
    n_read: int = 0
    n_imported: int = 0
    n_rejected: int = 0
    n_duplicates: int = 0
    n_near_duplicates: int = 0
    n_repaired: int = 0  # ShareGPT conversations kept after FastChat's repair (formats.repair_sharegpt_turns)
    n_needs_answer: int = 0  # prompt-only records imported as drafts whose answer is still to be written
    ended_early: str = ""
    empty: bool = False
    rejected: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)  # the first MAX_REPORTED: line and what was dropped
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def import_file(
    session: Session,
    user: User,
    project: Project,
    path: str | Path,
    fmt: str | None = None,
    *,
    strict: bool = False,
    mapping: dict | None = None,
    filename: str | None = None,
    progress: Progress | None = None,
    count_tokens: Callable[[str], int] | None = None,
    near_duplicates: bool = True,
    os_user: bool = False,
) -> ImportReport:
    """Import ``path`` into ``project`` as ``user``; return the report (also stored on an ImportRecord).

    ``fmt`` None detects the format; ``mapping`` maps CSV fields (instruction, input, output, system,
    tags, note, conversation) to column names; ``progress(fraction, message)`` is called per batch;
    ``count_tokens`` gives the token counts stored for hints and stats (default: a word-based estimate).
    ShareGPT conversations that start with the assistant or end on the user (chunks of split dumps) are
    repaired the way FastChat does and counted as repaired, unless ``strict``. ``os_user`` is for the command
    line, whose user is the operating-system user: any path the OS lets it read (core.workspace.local_path);
    otherwise the web's rule applies (``check_import_path``).
    """
    filename = filename or Path(path).name
    if os_user:
        from core.workspace import local_path

        require(user, "curate")
        path = local_path(path, folder=True)
    else:
        path = check_import_path(user, path)
    count_tokens = count_tokens or estimate_tokens
    info = ReadInfo()
    # raises InvalidInput for an unknown or unreadable format
    records = read_file(path, fmt, mapping, info, repair=not strict)
    report = ImportReport(None, filename, info.format, info.encoding, strict)

    # The record is committed first, pending: its rows are written in short transactions, hidden from every
    # query (storage.models.visible_examples) until one quick update at the end shows them all.
    rec = ImportRecord(project_id=project.id, user_id=user.id, filename=filename, format=info.format,
                       strict=strict, status=ImportStatus.pending.value, report=_owner())
    session.add(rec)
    session.commit()
    _RUNNING.add(rec.id)
    try:
        seen = set(session.execute(select(Example.content_hash).where(Example.project_id == project.id,
                                                                      visible_examples())).scalars())
        index = _project_index(session, project) if near_duplicates else None
        session.commit()  # end the read transaction: other writers go on while the file is read
        # The columns every imported row shares (read once: ORM attribute access costs per row).
        fixed = {"project_id": project.id, "status": ExampleStatus.draft.value,
                 "reject_reason": "", "near_duplicate_of": None, "source": "import", "import_id": rec.id,
                 "assigned_to": None, "created_by": user.id, "updated_by": user.id, "reviewed_by": None,
                 "version": 1, "origin": {}}
        batch: list[dict] = []
        near: list[str] = []  # the normalised near-duplicate text of each row of the batch
        for item in records:
            report.n_read += 1
            if not isinstance(item, Parsed):
                report.n_rejected += 1
                if len(report.rejected) < MAX_REPORTED:
                    report.rejected.append(item.as_dict())
                continue
            r = item.record
            digest, search, near_norm = record_keys(r)
            if digest in seen:
                report.n_duplicates += 1
                continue
            if item.repaired:
                report.n_repaired += 1
                if len(report.repaired) < MAX_REPORTED:
                    report.repaired.append({"line": item.line, "byte": item.byte, "dropped": item.repaired})
            seen.add(digest)
            batch.append(_row(fixed, r, digest, search, count_tokens))
            if item.needs_answer:  # a prompt-only record: a draft whose answer an annotator (or a model) writes
                report.n_needs_answer += 1
                batch[-1]["origin"] = {"needs_answer": True}
            near.append(near_norm)
            if len(batch) >= BATCH:
                _flush(session, batch, near, index, report)
                batch, near = [], []
                if progress:
                    progress(_fraction(info), f"{report.n_read:,} records read, {report.n_imported:,} imported")
        _flush(session, batch, near, index, report)
        report.encoding = info.encoding
        report.format = info.format
        report.ended_early = info.ended_early
        report.empty = info.empty or report.n_read == 0
        if strict and report.n_rejected:
            _delete_rows(session, rec.id)
            report.n_imported = 0
            report.n_near_duplicates = 0
            report.message = (f"Strict mode: nothing imported because {report.n_rejected} record(s) were "
                              "rejected. Fix them or import without strict mode.")
        else:
            report.message = _summary(report)
        # The one write that shows the import: a single row, however many examples it holds.
        rec.status = ImportStatus.done.value
        _fill_record(rec, report)
        session.add(rec)
        session.commit()
    except BaseException:
        session.rollback()
        try:
            discard_import(session, rec.id)
        except Exception:  # noqa: BLE001 - the import's own error is the one to report; the rows stay hidden
            pass  # and discard_abandoned_imports removes them later (server timer, next start)
        raise
    finally:
        _RUNNING.discard(rec.id)
    report.import_id = rec.id
    if progress:
        progress(1.0, report.message)
    return report


# Imports this process is writing now (ids of pending ImportRecords); any other pending import of this process
# was left behind by an error and may be discarded.
_RUNNING: set[int] = set()
DELETE_BATCH = 5000


def _owner() -> dict:
    """Who writes a pending import: its process (pid and start time, so a reused pid is told apart)."""
    from core.jobs.processes import stamps

    return {"pid": os.getpid(), **stamps(os.getpid())}


def _delete_rows(session: Session, import_id: int) -> None:
    """Delete an import's rows in short transactions (ids read first, outside the write lock)."""
    table = Example.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table classes
    last = 0
    while True:
        ids = list(session.execute(select(Example.id).where(Example.import_id == import_id, Example.id > last)
                                   .order_by(Example.id).limit(DELETE_BATCH)).scalars())
        session.commit()
        if not ids:
            return
        session.execute(delete(table).where(table.c.id.in_(ids)))
        session.commit()
        last = ids[-1]


def discard_import(session: Session, import_id: int) -> None:
    """Remove a pending import: its hidden rows, then its record (a done import is never touched)."""
    rec = session.get(ImportRecord, import_id)
    if rec is None or rec.status != ImportStatus.pending.value:
        return
    _delete_rows(session, import_id)
    table = ImportRecord.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table classes
    session.execute(delete(table).where(table.c.id == import_id, table.c.status == ImportStatus.pending.value))
    session.commit()


def discard_abandoned_imports(session: Session) -> list[int]:
    """Discard pending imports nobody is writing any more: their process died (a killed server), or it is this
    process and the import ended in an error it could not clean up. Run at start and by the server's timer."""
    import psutil

    from core.jobs.processes import same_start

    gone = []
    for rec in session.execute(select(ImportRecord).where(ImportRecord.status == ImportStatus.pending.value)
                               ).scalars().all():
        pid = (rec.report or {}).get("pid")
        if pid == os.getpid():
            alive = rec.id in _RUNNING
        else:
            report = rec.report or {}
            alive = bool(pid) and psutil.pid_exists(pid) and same_start(pid, report.get("pid_ident"),
                                                                        report.get("pid_create_time"))
        if not alive:
            gone.append(rec.id)
    session.commit()
    for import_id in gone:
        discard_import(session, import_id)
    return gone


def check_import_path(user: User, path: str | Path) -> Path:
    """The web's rule for a server path (core.workspace.inside_roots), with the roles it needs: the real path of an
    existing file or folder ``user`` may import, or PermissionDenied.

    An upload (a file under the workspace's uploads folder) needs the curate role. Any other path on the server
    needs the import_server_files role (engineers) and must lie inside one of the import folders an admin
    configured (core.workspace.import_roots), named without symbolic links or "..". The refusal is the same whether
    or not the path exists, so it reveals nothing about the server's files. (The command line does not use this:
    its user is the OS user, core.workspace.local_path.)
    """
    from core.workspace import import_roots, inside_roots, uploads_dir

    require(user, "curate")
    try:
        return inside_roots(path, [uploads_dir()])
    except PermissionDenied:
        pass
    require(user, "import_server_files")
    return inside_roots(path, import_roots())


def _fraction(info: ReadInfo) -> float:
    return min(1.0, info.bytes_read / info.total_bytes) if info.total_bytes else 0.0


def _summary(r: ImportReport) -> str:
    if r.empty:
        return f"{r.filename} is empty: nothing to import."
    parts = [f"Imported {r.n_imported:,} of {r.n_read:,} records"]
    if r.n_duplicates:
        parts.append(f"{r.n_duplicates:,} exact duplicates skipped")
    if r.n_near_duplicates:
        parts.append(f"{r.n_near_duplicates:,} near duplicates flagged for review")
    if r.n_needs_answer:
        parts.append(f"{r.n_needs_answer:,} of them prompt-only: drafts that need an answer (write it on Annotate, or "
                     "have a model draft it on the Datasets page)")
    if r.n_repaired:
        parts.append(f"{r.n_repaired:,} ShareGPT conversations repaired (leading assistant or trailing user "
                     "messages dropped, as FastChat does)")
    if r.n_rejected:
        parts.append(f"{r.n_rejected:,} rejected")
    msg = "; ".join(parts) + "."
    if r.ended_early:
        msg += f" The {r.ended_early}: every complete record before it was kept."
    return msg


def _fill_record(rec: ImportRecord, report: ImportReport) -> None:
    rec.n_read = report.n_read
    rec.n_imported = report.n_imported
    rec.n_rejected = report.n_rejected
    rec.n_duplicates = report.n_duplicates
    rec.n_near_duplicates = report.n_near_duplicates
    rec.ended_early = bool(report.ended_early)
    rec.format = report.format
    rec.report = {"encoding": report.encoding, "ended_early": report.ended_early, "empty": report.empty,
                  "rejected": report.rejected, "n_repaired": report.n_repaired, "repaired": report.repaired,
                  "n_needs_answer": report.n_needs_answer,
                  "message": report.message}


def _row(fixed: dict, r: dict, digest: str, search: str, count_tokens) -> dict:
    row = fixed.copy()
    row.update(system=r["system"], turns=r["turns"], input=r["input"], tags=r["tags"], note=r["note"],
               content_hash=digest, search_text=search,
               # The default estimate counts words, and the search text has exactly the record's words.
               token_count=estimate_tokens(search) if count_tokens is estimate_tokens
               else count_tokens(record_text(r)))
    return row


def _flush(session: Session, batch: list[dict], near: list[str], index: NearDuplicateIndex | None,
           report: ImportReport) -> None:
    """Insert a batch (multi-row INSERT ... RETURNING id) and flag its near duplicates, WRITE_BATCH rows per short
    transaction: the MinHash work is done before, so the write lock is held only for the SQL."""
    if not batch:
        return
    bands = index.bands(near, normalised=True) if index is not None else [None] * len(batch)
    now = utcnow()  # one timestamp per batch: the rows are created together
    for row in batch:
        row["created_at"] = row["updated_at"] = now
    for start in range(0, len(batch), WRITE_BATCH):
        _write(session, batch[start:start + WRITE_BATCH], bands[start:start + WRITE_BATCH], index, report)


def _write(session: Session, batch: list[dict], bands: list, index: NearDuplicateIndex | None,
           report: ImportReport) -> None:
    """One write transaction: insert the rows, flag their near duplicates, commit."""
    table = Example.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table classes
    # RETURNING (id, content_hash) without sort_by_parameter_order: SQLAlchemy sends the batch as a few
    # multi-row INSERTs instead of falling back to one statement per row, and the content hash (unique
    # within an import, duplicates were skipped) says which id each row got, whatever order they come in.
    returned = dict((h, i) for i, h in session.execute(insert(table).returning(table.c.id, table.c.content_hash),
                                                        batch))
    ids = [returned[row["content_hash"]] for row in batch]
    flagged = []
    if index is not None:
        found = index.check_and_add_bands(ids, bands)
        flagged = [{"b_id": i, "b_dup": dup} for i, dup in zip(ids, found) if dup is not None]
    if flagged:
        session.execute(update(table).where(table.c.id == bindparam("b_id"))
                        .values(near_duplicate_of=bindparam("b_dup")), flagged,
                        execution_options={"synchronize_session": False})
    session.commit()
    report.n_imported += len(ids)
    report.n_near_duplicates += len(flagged)


def _project_index(session: Session, project: Project) -> NearDuplicateIndex:
    """An LSH index of the project's existing examples, built in keyset-paged batches."""
    index = NearDuplicateIndex()
    last = 0
    while True:
        rows = session.execute(
            select(Example.id, Example.turns, Example.input).where(Example.project_id == project.id, Example.id > last,
                                                                   visible_examples())
            .order_by(Example.id).limit(INDEX_PAGE)).all()
        if not rows:
            return index
        texts = [near_text({"turns": r[1], "input": r[2]}) for r in rows]
        index.add_many([r[0] for r in rows], index.signatures(texts))
        last = rows[-1][0]


def import_history(session: Session, project: Project, limit: int = 50) -> list[dict]:
    """The project's latest finished imports, newest first: who, when, which file and what happened to it."""
    rows = session.execute(select(ImportRecord, User.username).outerjoin(User, User.id == ImportRecord.user_id)
                           .where(ImportRecord.project_id == project.id,
                                  ImportRecord.status == ImportStatus.done.value)
                           .order_by(ImportRecord.id.desc()).limit(limit)).all()
    return [{"id": rec.id, "when": rec.created_at, "who": who or "(unknown)", "file": rec.filename,
             "format": rec.format, "read": rec.n_read, "imported": rec.n_imported, "rejected": rec.n_rejected,
             "duplicates": rec.n_duplicates, "near duplicates": rec.n_near_duplicates,
             "ended early": rec.ended_early, "strict": rec.strict} for rec, who in rows]


def report_level(report: dict) -> str:
    """How the import page frames a report: "error" when nothing was imported although records were read or
    rejected (bad file, or strict mode refused it), "warning" when some records were rejected, the file was
    cut off, or nothing new came in (empty, or all duplicates), else "success"."""
    if report.get("n_imported", 0) == 0 and report.get("n_rejected", 0):
        return "error"
    if report.get("n_rejected", 0) or report.get("ended_early") or report.get("n_imported", 0) == 0:
        return "warning"
    return "success"


def check_format(fmt: str | None) -> str | None:
    from core.curate.formats import FILE_FORMATS

    if fmt and fmt not in FILE_FORMATS:
        raise InvalidInput(f"Unknown format {fmt!r}; choose one of: {', '.join(FILE_FORMATS)}.")
    return fmt or None


def save_upload(name: str, data: bytes) -> Path:
    """Store an uploaded file under the workspace's uploads folder (a fresh name, never overwriting)."""
    import uuid

    from core.names import safe_file_name
    from core.workspace import uploads_dir

    base = Path(str(name).replace("\\", "/")).name
    suffix = Path(base).suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", Path(base).suffix) else ""
    safe = safe_file_name(base[:len(base) - len(suffix)], suffix, default="upload")
    folder = uploads_dir() / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    path.write_bytes(data)
    return path
