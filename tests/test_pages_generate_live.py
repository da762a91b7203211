"""The Generate page tells the truth while a job runs and after: real counts with an ETA from the first
second, decoding in words, sampling knobs only under sampling, a sensible default choice of systems."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.evaluate import evalsets, generate
from storage.models import Job, Output
from tests.fixtures_jobs import add_job, live_process
from tests.helpers import make_outputs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _page(user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "generate.py"), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


@pytest.fixture
def prompts4(session, project, users):
    es = evalsets.create_eval_set_from_file(session, users["engineer"], project.id, "four",
                                            "\n".join(f'{{"prompt": "question {i}"}}' for i in range(4)),
                                            "p.jsonl")
    return es, evalsets.eval_prompts(session, es.id)


def test_progress_counts_real_outputs_from_the_start_with_an_eta(session, project, users, prompts4):
    es, prompts = prompts4
    config = {"eval_set_id": es.id, "systems": ["base", "run:99"]}
    with live_process() as proc:
        job = add_job(session, project, users["engineer"], kind="generate", name="gen", pid=proc.pid, config=config,
                      eval_set_id=es.id)
        at = _page(users["engineer"]).run()
        assert not at.exception, [e.value for e in at.exception]
        assert _progress_texts(at) == ["0/8 outputs · starting"]  # 4 prompts x 2 systems, before any batch

        # Two batches of the base model written: 3 outputs in 6 s of generation -> 2 s each, 5 left -> 10 s.
        for p in prompts[:3]:
            session.add(Output(prompt_id=p.id, system="base", job_id=job.id, text="x", decoding={}))
        session.commit()
        Path(job.run_dir, "progress.jsonl").write_text(
            '{"stage": "generating", "system": "base", "done": 2, "total": 8, "batch": 2, "seconds": 4.0,'
            ' "tokens_per_s": 31.5}\n'
            '{"stage": "generating", "system": "base", "done": 3, "total": 8, "batch": 1, "seconds": 2.0,'
            ' "tokens_per_s": 30.0}\n')
        at.run()
    assert _progress_texts(at) == ["3/8 outputs · generating · 30.0 tokens/s · about 0m 10s left"]
    progress = generate.generation_progress(session, job)
    assert (progress["done"], progress["total"], progress["eta_s"]) == (3, 8, 10.0)


def test_finished_job_shows_decoding_in_words_and_the_eval_set_its_systems(session, project, users):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    gen = session.exec(select(Job).where(Job.kind == "generate")).one()
    gen.result = {"done": 4, "new_tokens": 28, "seconds": 1.5,
                  "decoding": {"mode": "sample", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "seed": 3}}
    session.add(gen)
    session.commit()
    at = _page(users["engineer"]).run()
    captions = [c.value for c in at.caption]
    line = next(c for c in captions if c.startswith("4 outputs"))
    assert "sampling at temperature 0.7, top-p 0.9, seed 3, up to 64 new tokens" in line and "{" not in line
    table = at.dataframe[0].value
    assert list(table["systems with outputs"]) == ["base model, run 1: secret-lora-0"]


def test_sampling_knobs_are_disabled_under_greedy(session, project, users, prompts4):
    at = _page(users["engineer"]).run()
    assert at.slider(key="gen_temperature").disabled and at.slider(key="gen_top_p").disabled
    at.radio(key="gen_mode").set_value("Sampling").run()
    assert not at.slider(key="gen_temperature").disabled and not at.slider(key="gen_top_p").disabled


def test_only_the_base_model_and_the_newest_run_are_preselected(session, project, users):
    make_outputs(session, project, users["engineer"], n_prompts=2, runs=3)
    newest = max(j.id for j in session.exec(select(Job).where(Job.kind == "train")))
    at = _page(users["engineer"]).run()
    assert at.multiselect(key="gen_systems").value == ["base", f"run:{newest}"]


def test_start_confirms_with_a_toast_not_a_lingering_box(session, project, users, prompts4):
    es, _ = prompts4
    with live_process() as proc:  # the one slot is busy, so the new job waits in the queue (nothing generates)
        add_job(session, project, users["engineer"], name="busy", pid=proc.pid)
        at = _page(users["engineer"]).run()
        at.multiselect(key="gen_systems").set_value(["base"])
        at.button(key="gen_start").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        job = session.exec(select(Job).where(Job.kind == "generate")).one()
        assert f"Generation job {job.id} queued." in at.session_state["_flash"]
        assert not [s.value for s in at.success]  # nothing claims "running" once it is no longer true
        at.run()
        assert not [s.value for s in at.success]
        assert _progress_texts(at) == ["0/4 outputs"]
