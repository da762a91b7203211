"""CSV exports are safe to open in a spreadsheet: a cell that would run as a formula is written as text
(OWASP's advice: a leading single quote), and the dataset CSV still round-trips through the importer."""
from __future__ import annotations

import csv
import io
import json

from sqlmodel import select

from core.curate.curation import record_of
from core.curate.datasets import export
from core.curate.importing import import_file
from core.projects import create_project
from storage.models import Example

TRIGGERS = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+1+2", "-2+3", "@SUM(A1:A2)", "\tleading tab",
            "\rleading CR", "'=already quoted"]


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_dataset_csv_neutralises_formula_cells_and_round_trips(session, users, tmp_path):
    admin = users["admin"]
    source = create_project(session, admin, "Formulas", "")
    records = []
    for i, text in enumerate(TRIGGERS):
        rec = {"system": text, "turns": [{"role": "user", "content": text + f" q{i}"},
                                         {"role": "assistant", "content": text + f" a{i}"}],
               "input": text, "tags": [], "note": text}
        records.append(rec)
        session.add(Example(project_id=source.id, content_hash=f"h{i}", **rec))
    session.commit()
    out = export(session, admin, source, "csv", tmp_path / "out")  # a folder: one CSV per split

    cells = [c for f in sorted(out.glob("*.csv")) for c in _cells(f.read_text(encoding="utf-8"))]
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert dangerous == []
    assert "'=HYPERLINK(\"http://evil.example\",\"click\") a0" in cells
    assert "''=already quoted" in cells  # one more quote, so the importer can take exactly one off

    target = create_project(session, admin, "Back", "")
    report = import_file(session, admin, target, out)
    assert report.n_rejected == 0, report.rejected
    rows = session.exec(select(Example).where(Example.project_id == target.id).order_by(Example.id)).all()
    # The split files come back one after the other: compare as sets of records.
    assert sorted((record_of(r) for r in rows), key=json.dumps) == sorted(records, key=json.dumps)


def test_scores_csv_neutralises_comments_and_names(session, project, users):
    from core.accounts import create_user
    from core.evaluate import results, review
    from tests.helpers import full_scores, make_outputs

    es, _ = make_outputs(session, project, users["engineer"], n_prompts=1, runs=1)
    rev = create_user(session, users["admin"], "@rev", "correct-horse-battery", "reviewer")
    item = review.next_item(session, rev, es.id)
    review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(3, 4), preference="A",
                        comment="=cmd|' /C calc'!A0")
    cells = _cells(results.scores_csv(session, users["engineer"], es.id))
    assert "'=cmd|' /C calc'!A0" in cells and "'@rev" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
