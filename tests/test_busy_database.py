"""A busy or failing database: imports write in short batches and stay invisible until they finish, a lock held
too long or a full disk is a clear message (pages and CLI), and abandoned imports are cleaned up."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

import storage.db as storage_db
from core.curate import curation as cur
from core.curate.datasets import stats
from core.curate.importing import discard_abandoned_imports, import_file
from core.errors import DatabaseBusy, DatabaseWriteFailed, NotFound
from core.projects import project_summary
from storage.models import Example, ImportRecord

ROOT = Path(__file__).resolve().parents[1]


def alpaca(i: int) -> dict:
    return {"instruction": f"Question number {i} about tariff {i * 7} and meter {i * 13}?",
            "output": f"Answer {i}: read meter {i * 13} on the {i % 28 + 1}th.", "tags": ["imported"]}


def write_jsonl(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps(alpaca(i)) + "\n" for i in range(start, start + n)), encoding="utf-8")
    return path


def test_rows_of_an_import_stay_invisible_until_it_finishes(session, users, project, tmp_path, monkeypatch):
    import core.curate.importing as importing

    monkeypatch.setattr(importing, "BATCH", 10)
    ann = users["annotator"]
    mine = cur.create_example(session, ann, project, turns=[{"role": "user", "content": "Old one?"},
                                                            {"role": "assistant", "content": "Still here."}])
    path = write_jsonl(tmp_path / "a.jsonl", 45)
    seen_mid_import = []

    def look(fraction, message):
        if fraction >= 1.0:
            return
        with Session(storage_db.get_engine(), expire_on_commit=False) as other:  # another user, meanwhile
            written = other.exec(select(Example.id).where(Example.project_id == project.id)).all()
            assert len(written) > 1  # batches are committed as they go...
            hidden = max(written)
            with pytest.raises(NotFound):  # ...and nobody can see or open them
                cur.get_example(other, hidden)
            # Saving the same text as a hidden row is not "a duplicate of #<hidden>".
            dup = cur.example_hints(other, project, None, {"system": "", "input": "", "turns": [
                {"role": "user", "content": alpaca(0)["instruction"]},
                {"role": "assistant", "content": alpaca(0)["output"]}]})[1]
            seen_mid_import.append({
                "counts": cur.status_counts(other, project),
                "queue": [e.id for e in cur.queue_page(other, project)],
                "next": cur.next_for(other, project, ann).id,
                "tags": cur.list_tags(other, project),
                "stats": stats(other, project)["by_status"],
                "summary": project_summary(other, project)["examples"],
                "dup_hint": [h.text for h in dup if "Same text" in h.text],
            })

    report = import_file(session, users["admin"], project, path, progress=look)
    assert report.n_imported == 45 and len(seen_mid_import) == 4
    for seen in seen_mid_import:
        assert seen == {"counts": {"draft": 1, "submitted": 0, "approved": 0, "rejected": 0}, "queue": [mine.id],
                        "next": mine.id, "tags": [], "stats": {"draft": 1}, "summary": 1, "dup_hint": []}
    assert cur.status_counts(session, project)["draft"] == 46  # one quick update showed them all
    assert cur.list_tags(session, project) == ["imported"]


def test_an_abandoned_import_is_discarded(session, users, project, tmp_path, monkeypatch):
    """A server killed mid-import leaves hidden rows of a pending import; the next start removes them."""
    import core.curate.importing as importing
    from core.startup import init_workspace

    monkeypatch.setattr(importing, "BATCH", 10)
    path = write_jsonl(tmp_path / "a.jsonl", 30)

    def crash(fraction, message):
        if fraction < 1.0:
            raise KeyboardInterrupt

    with monkeypatch.context() as killed, pytest.raises(KeyboardInterrupt):
        killed.setattr(importing, "discard_import", lambda *a: None)  # as if killed: no cleanup ran
        import_file(session, users["admin"], project, path, progress=crash)
    pending = session.exec(select(ImportRecord)).one()
    assert pending.status == "pending" and session.exec(select(Example)).all()
    assert cur.status_counts(session, project)["draft"] == 0
    # The writer is gone: a dead pid, as after kill -9 of the server.
    pending.report = {"pid": 2**22 + 12345, "pid_create_time": 1.0}
    session.add(pending)
    session.commit()
    init_workspace(with_demo=False)
    session.expire_all()
    assert session.exec(select(Example)).all() == [] and session.exec(select(ImportRecord)).all() == []
    assert discard_abandoned_imports(session) == []


@pytest.fixture
def short_busy_timeout(monkeypatch):
    """Wait 0.3 s instead of 10 for a lock (connections made from now on), so the test need not sit out 10 s."""
    monkeypatch.setattr(storage_db, "BUSY_TIMEOUT_MS", 300)
    storage_db.reset_engines()
    yield
    storage_db.reset_engines()


def _hold_write_lock(workspace: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(workspace / "studio.db", isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_locked_database_is_a_clear_message_in_core_and_on_the_page(session, users, project, workspace,
                                                                      short_busy_timeout):
    ex = cur.create_example(session, users["annotator"], project, submit=True,
                            turns=[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}])
    cur.review_example(session, users["reviewer"], ex.id, "approve")
    ex = cur.get_example(session, ex.id)
    lock = _hold_write_lock(workspace)
    try:
        with Session(storage_db.get_engine(), expire_on_commit=False) as s:
            with pytest.raises(DatabaseBusy, match="The database is busy.*Nothing was saved"):
                cur.save_example(s, users["annotator"], ex.id, expected_version=ex.version, system="",
                                 turns=[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "B."}])
        at = AppTest.from_file(str(ROOT / "pages/dataset_versions.py"), default_timeout=60)
        at.session_state["user_id"] = users["reviewer"].id
        at.session_state["project_id"] = project.id
        at.run()  # reading works while another writer holds the lock (WAL)
        at.text_input[0].set_value("v1")
        next(b for b in at.button if b.label == "Freeze").click()
        at.run()
        assert not at.exception
        assert [e.value for e in at.error] == [
            "The database is busy: another write held it for more than 0 s. Nothing was saved; try again in a "
            "moment."]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    session.expire_all()
    assert session.get(Example, ex.id).turns[1]["content"] == "A."  # nothing half-saved


def test_a_full_disk_is_a_clear_message(session, users, project, workspace):
    """SQLite's real "database or disk is full" (max_page_count caps the file where it is now)."""
    with Session(storage_db.get_engine(), expire_on_commit=False) as s:
        pages = s.connection().exec_driver_sql("PRAGMA page_count").scalar()
        s.connection().exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(DatabaseWriteFailed, match="disk holding the workspace is full.*Nothing was saved"):
            cur.create_example(s, users["annotator"], project, turns=[
                {"role": "user", "content": "Big?"}, {"role": "assistant", "content": "x " * 400_000}])


@pytest.mark.slow
def test_the_cli_says_the_database_is_busy_in_one_line(users, project, workspace):
    from tests.helpers import cli

    lock = _hold_write_lock(workspace)
    try:
        t0 = time.time()
        out = cli(workspace, "projects", "--create", "Another")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert out.returncode == 1 and time.time() - t0 < 60
    assert out.stderr.strip().splitlines() == [
        "error: The database is busy: another write held it for more than 10 s. Nothing was saved; try again "
        "in a moment."]


# ---------------------------------------------------------------- the real thing, at size (slow)


def random_records(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` Alpaca records of random words (no near duplicates to speak of), written as JSON Lines."""
    import random

    rng = random.Random(seed)
    vocab = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in "lmnrstx"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            words = rng.choices(vocab, k=20)
            fh.write(json.dumps({"instruction": f"{i} " + " ".join(words[:8]) + "?",
                                 "output": " ".join(words[8:]) + "."}) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_300k_record_import_does_not_lock_out_a_concurrent_writer(session, users, project, workspace, tmp_path):
    """Used to be one 19-29 s write transaction: saves beside it failed with "database is locked" after 10 s."""
    import subprocess
    import sys

    ann = users["annotator"]
    ex = cur.create_example(session, ann, project, turns=[{"role": "user", "content": "Meter?"},
                                                          {"role": "assistant", "content": "Read it."}])
    path = random_records(tmp_path / "big.jsonl", 300_000)
    env = dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace))
    importer = subprocess.Popen([sys.executable, "-m", "core.cli", "import", str(path), "--project", project.name,
                                 "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    latencies, errors, visible_during = [], [], set()
    version = ex.version
    t0 = time.time()
    while importer.poll() is None:
        started = time.perf_counter()
        try:
            with Session(storage_db.get_engine(), expire_on_commit=False) as s:
                saved = cur.save_example(s, ann, ex.id, expected_version=version, system="", turns=[
                    {"role": "user", "content": "Meter?"}, {"role": "assistant", "content": f"Read it ({version})."}])
                version = saved.version
                visible_during.add(sum(cur.status_counts(s, project).values()))
        except Exception as err:  # noqa: BLE001 - counted: the test wants none
            errors.append(repr(err))
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    out, err = importer.communicate()
    elapsed = time.time() - t0
    assert importer.returncode == 0, err[-2000:]
    result = json.loads(out)
    assert result["imported"] + result["duplicates"] == 300_000 and result["imported"] > 299_000
    assert errors == []
    assert len(latencies) > 100, f"only {len(latencies)} saves in {elapsed:.0f} s"
    latencies.sort()
    assert latencies[-1] < 2.0, f"slowest save {latencies[-1]:.2f} s (p50 {latencies[len(latencies) // 2]:.3f} s)"
    # All or nothing: while it ran only the old example was visible; the import's rows appeared all at once.
    assert 1 in visible_during and visible_during <= {1, 1 + result["imported"]}
    assert sum(cur.status_counts(session, project).values()) == 1 + result["imported"]
