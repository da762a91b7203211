"""Dataset versions: frozen copies, stable splits, stats, version_records, export of a version."""
from __future__ import annotations

import pytest
from sqlmodel import select

from core.curate import curation as cur
from core.curate.datasets import (export, freeze_version, get_version, iter_version, split_of, stats,
                           version_records)
from core.errors import InvalidInput, PermissionDenied
from storage.models import DatasetVersionItem


def approved(session, users, project, n, start=0, system=""):
    out = []
    for i in range(start, start + n):
        ex = cur.create_example(session, users["annotator"], project, system=system, tags=["t%d" % (i % 2)],
                                turns=[{"role": "user", "content": f"Question {i}?"},
                                       {"role": "assistant", "content": f"Answer {i}, in words."}])
        cur.submit_example(session, users["annotator"], ex.id, ex.version)
        out.append(cur.review_example(session, users["reviewer"], ex.id, "approve"))
    return out


def test_freeze_copies_approved_and_stays_immutable(session, project, users):
    exs = approved(session, users, project, 5, system="Be kind.")
    cur.create_example(session, users["annotator"], project, turns=[
        {"role": "user", "content": "draft?"}, {"role": "assistant", "content": "not in the version"}])
    with pytest.raises(PermissionDenied):
        freeze_version(session, users["annotator"], project, "v1")
    v = freeze_version(session, users["reviewer"], project, "v1")
    assert (v.n_train + v.n_validation + v.n_test, v.created_by, len(v.content_hash)) == (5, users["reviewer"].id, 64)
    with pytest.raises(InvalidInput, match="already exists"):
        freeze_version(session, users["reviewer"], project, "v1")
    cur.save_example(session, users["annotator"], exs[0].id, expected_version=exs[0].version,
                     system="Be kind.", turns=[{"role": "user", "content": "Question 0?"},
                                               {"role": "assistant", "content": "Edited later."}])
    items = {i.example_id: i for i in session.exec(select(DatasetVersionItem)).all()}
    assert items[exs[0].id].turns[1]["content"] == "Answer 0, in words."
    again = freeze_version(session, users["reviewer"], project, "v1-again")
    # The edit sent example 0 back to draft: the new version has 4 examples and another hash.
    assert again.n_train + again.n_validation + again.n_test == 4 and again.content_hash != v.content_hash


def test_split_is_deterministic_and_stable(session, project, users):
    first = approved(session, users, project, 40)
    v1 = freeze_version(session, users["reviewer"], project, "v1", seed=7)
    before = {i.example_id: i.split for i in session.exec(
        select(DatasetVersionItem).where(DatasetVersionItem.version_id == v1.id)).all()}
    approved(session, users, project, 20, start=100)
    v2 = freeze_version(session, users["reviewer"], project, "v2", seed=7)
    after = {i.example_id: i.split for i in session.exec(
        select(DatasetVersionItem).where(DatasetVersionItem.version_id == v2.id)).all()}
    assert all(after[e.id] == before[e.id] for e in first)  # old examples keep their split
    assert set(before.values()) == {"train", "validation", "test"}
    fr = {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert [split_of(i, 7, fr) for i in range(200)] == [split_of(i, 7, fr) for i in range(200)]
    assert [split_of(i, 7, fr) for i in range(200)] != [split_of(i, 8, fr) for i in range(200)]
    counts = [split_of(i, 0, fr) for i in range(10_000)]
    assert 0.78 < counts.count("train") / 10_000 < 0.82
    with pytest.raises(InvalidInput, match="add up to 1"):
        freeze_version(session, users["reviewer"], project, "bad", fractions={"train": 0.9, "validation": 0.2})
    only = freeze_version(session, users["reviewer"], project, "all-train",
                          fractions={"train": 1, "validation": 0, "test": 0})
    assert only.n_train == 60 and only.n_validation == only.n_test == 0


def test_version_records_shape(session, project, users):
    approved(session, users, project, 12, system="Be kind.")
    v = freeze_version(session, users["reviewer"], project, "v1", fractions={"train": 1, "validation": 0, "test": 0})
    recs = version_records(session, v.id, "train")
    assert len(recs) == 12
    assert recs[0] == {"prompt": [{"role": "system", "content": "Be kind."},
                                  {"role": "user", "content": "Question 0?"}],
                       "completion": [{"role": "assistant", "content": "Answer 0, in words."}],
                       "example_id": recs[0]["example_id"]}
    assert sorted(r["example_id"] for r in recs) == sorted(i.example_id for i in _items(session, v.id))
    assert version_records(session, v.id, "test") == []


def _items(session, version_id):
    from sqlmodel import select

    from storage.models import DatasetVersionItem

    return session.exec(select(DatasetVersionItem).where(DatasetVersionItem.version_id == version_id)).all()


def test_stats(session, project, users):
    approved(session, users, project, 6)
    cur.create_example(session, users["annotator"], project, turns=[
        {"role": "user", "content": "draft?"}, {"role": "assistant", "content": "a draft answer"}])
    v = freeze_version(session, users["reviewer"], project, "v1")
    whole = stats(session, project)
    assert whole["by_status"] == {"approved": 6, "draft": 1} and whole["by_annotator"] == {"annotator1": 7}
    assert len(whole["token_lengths"]) == 7 and whole["per_split"] == {}
    s = stats(session, project, v.id)  # the version's examples only: the later draft is not in it
    assert s["by_status"] == {"approved": 6}
    assert s["by_tag"] == {"t0": 3, "t1": 3}
    assert s["by_annotator"] == {"annotator1": 6}
    assert len(s["token_lengths"]) == 6 and sum(s["per_split"].values()) == 6


def test_export_version_to_datasetdict(session, project, users, tmp_path):
    from datasets import load_from_disk

    approved(session, users, project, 30)
    v = freeze_version(session, users["reviewer"], project, "v1")
    out = export(session, users["annotator"], project, "hf_disk", tmp_path / "dd", version_id=v.id)
    dd = load_from_disk(str(out))
    assert {k: len(dd[k]) for k in dd} == {"train": v.n_train, "validation": v.n_validation, "test": v.n_test}
    assert dd["train"][0]["messages"][-1]["role"] == "assistant"
    assert get_version(session, "v1", project).id == v.id
    assert sum(1 for _ in iter_version(session, v.id)) == 30


def test_cli_freeze_export_versions(workspace, session, project, users, tmp_path, capsys):
    import json

    from core.cli.main import main

    approved(session, users, project, 3)
    assert main(["freeze", "cli-v1", "--project", project.name, "--split", "0.6/0.2/0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "cli-v1"
    out = tmp_path / "v"
    assert main(["export", "--version", "cli-v1", "--project", project.name, "--format", "chat_jsonl",
                 "--out", str(out)]) == 0
    assert sum(len(f.read_text().splitlines()) for f in out.glob("*.jsonl")) == 3  # a file per split
    capsys.readouterr()
    assert main(["versions", "--project", project.name, "--json"]) == 0
    assert [v["name"] for v in json.loads(capsys.readouterr().out)] == ["cli-v1"]
