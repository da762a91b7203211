"""The demo project at the seed's scale: 1,000+ examples written from one fact sheet, no near duplicates, the
80/10/10 split, facts to check, seeded in one transaction, and the fact sheet shown as the guidelines."""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.curate import demo
from tools.demogen.build import build, near_duplicate_pairs
from tools.demogen.intents import FOLLOW_UPS, INTENTS
from core.curate.factsheet import facts_to_check, load_fact_sheet, parse_fact_sheet
from core.curate.importing import import_file, save_upload
from core.evaluate.evalsets import create_eval_set_from_version, eval_prompts
from storage.models import DatasetVersion, Example, Project

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [json.loads(line) for line in demo.DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
SHEET = load_fact_sheet(demo.FACT_SHEET)


def test_the_dataset_is_at_the_seeds_scale_and_varied():
    assert len(RECORDS) >= 1000
    turns = Counter(sum(m["role"] == "user" for m in r["messages"]) for r in RECORDS)
    assert turns[2] >= 50  # multi-turn conversations
    channels = Counter(t for r in RECORDS for t in r["tags"] if t in ("chat", "email", "sms"))
    assert min(channels.values()) >= 100 and len(channels) == 3
    users = [m["content"] for r in RECORDS for m in r["messages"] if m["role"] == "user"]
    assert len(set(users)) > 0.9 * len(users)  # customers rarely write the same message
    words = sorted(len(u.split()) for u in users)
    assert words[0] <= 3 and words[len(words) // 10] <= 8  # two-word texts ...
    assert words[-len(words) // 10] >= 25 and words[-1] >= 40  # ... and long emails
    answers = [r["messages"][-1]["content"] for r in RECORDS]
    assert all(len(a.split()) <= 120 for a in answers)  # the house style's limit
    assert sum(bool(re.search(r"^1\. ", a, re.M)) for a in answers) > 0.95 * len(answers)  # numbered steps


def test_every_fact_in_an_answer_comes_from_the_fact_sheet():
    values = set(SHEET.values.values())
    numbers = {n for r in RECORDS for m in r["messages"] for n in re.findall(r"0800 555 \d{4}", m["content"])}
    pages = {p.rstrip(".,;") for r in RECORDS for m in r["messages"]
             for p in re.findall(r"[\w.-]*@?brightwater-energy\.example[\w/-]*", m["content"])}
    assert numbers and numbers <= values
    assert pages and pages <= values | {"phishing@brightwater-energy.example"}
    # ... and each checked fact is given by many examples, in many phrasings.
    given = Counter(r.key for r in SHEET.checked() for rec in RECORDS if r.value in rec["messages"][-1]["content"])
    assert given["gas_emergency_line"] >= 40 and given["power_cut_line"] >= 40
    assert len(given) == len(SHEET.checked())


def test_the_file_is_what_the_generator_writes():
    records = build(INTENTS, FOLLOW_UPS, SHEET)
    assert records == RECORDS  # regenerate with `python -m tools.demogen` after changing an intent or the sheet


def test_no_two_examples_are_near_duplicates_by_the_projects_own_check(session, project, users):
    assert near_duplicate_pairs(RECORDS) == []
    upload = save_upload(demo.DEMO_FILE.name, demo.DEMO_FILE.read_bytes())  # as an upload on Import would
    report = import_file(session, users["admin"], project, upload, "chat")
    assert report.n_imported == len(RECORDS) and report.n_duplicates == 0 and report.n_near_duplicates == 0


def test_fact_sheet_tables_are_read_and_mistakes_refused():
    assert SHEET.values["power_cut_line"] == "0800 555 0105"
    assert SHEET.values["moving_in_page"] == "brightwater-energy.example/moving-in"
    assert {f["name"] for f in facts_to_check(SHEET)} == {r.key for r in SHEET.rows if r.check}
    assert "site" not in {f["name"] for f in facts_to_check(SHEET)}
    with pytest.raises(ValueError, match="twice"):
        parse_fact_sheet("| key | line | number | check |\n|---|---|---|---|\n| a | A | 1 | yes |\n| a | B | 2 | no |")
    with pytest.raises(ValueError, match="value column"):
        parse_fact_sheet("| key | line | check |\n|---|---|---|\n| a | A | yes |")


@pytest.fixture
def seeded(workspace, session, users):
    started = time.perf_counter()
    project = demo.seed_demo(session, users["admin"])
    return project, time.perf_counter() - started


def test_seed_gives_the_8010_10_split_facts_and_checked_test_prompts(session, users, seeded):
    project, seconds = seeded
    assert seconds < 30  # the first start's budget is ~90 s, most of it the model conversion
    version = session.exec(select(DatasetVersion).where(DatasetVersion.project_id == project.id)).one()
    total = version.n_train + version.n_validation + version.n_test
    assert total == len(RECORDS) and version.name == demo.DEMO_VERSION
    assert 0.77 < version.n_train / total < 0.83 and 80 <= version.n_test <= 120
    statuses = dict(session.exec(select(Example.status, func.count()).where(Example.project_id == project.id)
                                 .group_by(Example.status)).all())
    assert statuses == {"approved": len(RECORDS)}
    assert project.facts == facts_to_check(SHEET) and "0800 555 0105" in project.guidelines
    es = create_eval_set_from_version(session, users["engineer"], project.id, version.id, "held-out")
    prompts = eval_prompts(session, es.id)
    assert len(prompts) == version.n_test and all(p.checks for p in prompts)  # every test prompt is checked


def test_a_seed_that_fails_half_way_leaves_nothing(workspace, session, users, monkeypatch):
    def broken_freeze(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "freeze_version", broken_freeze)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.seed_demo(session, users["admin"])
    session.expire_all()
    assert session.exec(select(func.count()).select_from(Project)).one() == 0
    assert session.exec(select(func.count()).select_from(Example)).one() == 0


@pytest.mark.parametrize("page", ["home.py", "admin.py"])
def test_the_fact_sheet_is_shown_as_the_projects_guidelines(seeded, users, page):
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60)
    at.session_state["user_id"] = users["admin"].id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [m.value for m in at.markdown] + [t.value for t in at.text_area]
    sheet = next((text for text in shown if "Brightwater Gas & Electric: fact sheet" in text), "")
    for line in ("0800 555 0105", "brightwater-energy.example/powercut", "within 10 working days",
                 "the emergency number first"):
        assert line in sheet
