"""No leakage on the pages and the command line: the Datasets page reports what a freeze found overlapping, the
Train page shows the leaks before launch and excludes them with one button, the CLI's --exclude-leaked."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.curate.leakage import freeze_checked
from core.jobs.queue import list_jobs
from tests.fixtures_jobs import add_job, live_process
from tests.helpers import ALL_TRAIN, QUESTIONS, cli, leak_eval_set, leak_example, near_copy

ROOT = Path(__file__).resolve().parents[1]


def _page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


@pytest.fixture
def leaky(session, users, project):
    """Eight approved examples; an eval set (named like Markdown) holds a near copy of example 2's question."""
    eng = users["engineer"]
    examples = [leak_example(session, project, eng, q) for q in QUESTIONS[:8]]
    es = leak_eval_set(session, project, eng, "**bold** [set](http://x)", [near_copy(QUESTIONS[2]), QUESTIONS[10]])
    return examples, es


def test_datasets_page_reports_a_planted_leak_when_freezing(session, users, project, leaky):
    examples, es = leaky
    at = _page("dataset_versions.py", users["engineer"]).run()
    at.text_input[0].input("v1").run()
    at.number_input[0].set_value(1.0).run()
    at.number_input[1].set_value(0.0).run()
    at.number_input[2].set_value(0.0).run()
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("1 train/validation example(s) repeat an eval prompt" in w.value for w in at.warning)
    frame = next(f for f in _frames(at) if "eval prompt" in f.columns)
    assert frame["example"].tolist() == [examples[2].id] and frame["match"].tolist() == ["near"]
    assert frame["eval set"].tolist() == [es.name]  # the name is data in a table, not Markdown
    assert "**bold**" not in " ".join(str(m.value) for m in (*at.markdown, *at.caption, *at.warning))
    at.selectbox(key="stats_for").select_index(1).run()  # another action on the page
    assert any("1 train/validation example(s) repeat an eval prompt" in w.value for w in at.warning)


@pytest.mark.slow
def test_train_page_shows_leaks_and_one_button_excludes_them(session, users, project, leaky, tiny_model):
    examples, es = leaky
    eng = users["engineer"]
    version = freeze_checked(session, eng, project, "v1", fractions=ALL_TRAIN)["version"]
    with live_process() as proc:  # holds the one slot: the launched run waits in the queue instead of training
        add_job(session, project, eng, name="busy", pid=proc.pid)
        at = _page("train.py", eng).run()
        assert not at.exception, [e.value for e in at.exception]
        at.radio(key="source").set_value("Local model folder").run()
        at.text_input(key="model_path").input(str(tiny_model)).run()
        assert any("1 example(s) of this version repeat an eval prompt" in w.value for w in at.warning)
        frame = next(f for f in _frames(at) if "eval prompt" in f.columns)
        assert frame["example"].tolist() == [examples[2].id] and frame["eval set id"].tolist() == [es.id]

        next(b for b in at.button if b.label == "Train").click().run()  # refused, with the reason
        assert any(f"example #{examples[2].id} repeats" in e.value for e in at.error), [e.value for e in at.error]
        assert [j.name for j in list_jobs(session, kind="train")] == ["busy"]

        at.button(key="exclude_leaked").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert "Exclude these 1 examples" not in [b.label for b in at.button]
        assert not any("repeat an eval prompt" in w.value for w in at.warning)
        assert any(f"#{examples[2].id}" in c.value for c in at.caption)  # what this run leaves out is shown
        next(b for b in at.button if b.label == "Train").click().run()
        assert not at.error, [e.value for e in at.error]
    session.expire_all()
    launched = next(j for j in list_jobs(session, kind="train") if j.name != "busy")
    assert launched.dataset_version_id == version.id and launched.config["exclude_example_ids"] == [examples[2].id]


@pytest.mark.slow
def test_cli_refuses_a_leaky_run_and_exclude_leaked_launches_it(session, users, project, leaky, workspace):
    examples, _ = leaky
    eng = users["engineer"]
    freeze_checked(session, eng, project, "v1", fractions=ALL_TRAIN)
    with live_process() as proc:
        add_job(session, project, eng, name="busy", pid=proc.pid)
        refused = cli(workspace, "train", "--version", "v1", "--user", "engineer1")
        assert refused.returncode == 1
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("error: 1 training example(s) repeat an eval prompt")
        assert f"example #{examples[2].id}" in line and "--exclude-leaked" in line
        out = cli(workspace, "train", "--version", "v1", "--user", "engineer1", "--exclude-leaked", "--json")
        assert out.returncode == 0, out.stderr
        assert f"excluding 1 example(s) that repeat an eval prompt: #{examples[2].id}" in out.stderr
    row = json.loads(out.stdout)
    assert row["status"] == "queued"
    session.expire_all()
    job = next(j for j in list_jobs(session, kind="train") if j.id == row["id"])
    assert job.config["exclude_example_ids"] == [examples[2].id]


def test_cli_freeze_lists_overlaps(session, users, project, leaky, workspace):
    examples, es = leaky
    out = cli(workspace, "freeze", "v1", "--split", "1/0/0", "--user", "engineer1")
    assert out.returncode == 0, out.stderr
    assert f"train example #{examples[2].id} repeats prompt" in out.stderr and f"eval set #{es.id} (near" in out.stderr
    assert "eval_leaks" in out.stdout
