"""The Train page's live panel and the Runs table tell the truth: the panel follows the run just started or
resumed, Resume is idempotent and refuses a finished schedule, Memory is live, the estimate adds up, a toast
says when a run ends, and the Runs table speaks human."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.errors import InvalidInput
from storage.models import Job
from tests.fixtures_jobs import add_job, finish, live_process
from tests.fixtures_models import make_dataset_version
from tests.helpers import page, status_line

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _train_config(tiny_model, version_id: int, **kw) -> dict:
    from core.train.config import TrainConfig

    return TrainConfig(base_model=str(tiny_model), dataset_version_id=version_id, max_length=96,
                       per_device_batch_size=2, max_steps=4, **kw).to_dict()


@pytest.fixture
def busy(session, project, users):
    """A running job that holds the machine's one slot, so anything launched now waits in the queue."""
    with live_process() as proc:
        yield add_job(session, project, users["engineer"], name="busy", pid=proc.pid)


def test_panel_follows_the_run_just_started(session, users, project, tiny_model, busy):
    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    at = page("train.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="watch_select").value == busy.id
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(tiny_model)).run()
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    new = session.exec(select(Job).where(Job.id != busy.id)).one()
    assert new.dataset_version_id == version.id
    assert at.selectbox(key="watch_select").value == new.id  # not still the run watched before
    assert "queued" in status_line(at)


@pytest.mark.slow
def test_resume_follows_the_new_run_and_a_second_click_is_refused(session, users, project, tiny_model, busy):
    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    old = add_job(session, project, users["engineer"], name="stopped", status="canceled",
                  config=_train_config(tiny_model, version.id), dataset_version_id=version.id,
                  error="Canceled by engineer1.")
    at = page("train.py", users["engineer"]).run()
    at.selectbox(key="watch_select").set_value(old.id).run()
    at.button(key=f"resume{old.id}").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    continuations = session.exec(select(Job).where(Job.resumed_from == old.id)).all()
    assert len(continuations) == 1
    assert at.selectbox(key="watch_select").value == continuations[0].id  # follows the new run
    assert f"resume{old.id}" not in [b.key for b in at.button]  # no Resume offered on the live continuation
    # The old run, picked again, offers no second Resume but says which run continues it; the core refuses one too.
    at.selectbox(key="watch_select").set_value(old.id).run()
    assert f"resume{old.id}" not in [b.key for b in at.button]
    assert any(f"being resumed as run {continuations[0].id}" in c.value for c in at.caption)
    from core.train.runs import resume_run

    with pytest.raises(InvalidInput, match=f"Run {old.id} is already being resumed as run {continuations[0].id}."):
        resume_run(session, users["engineer"], old.id)
    assert len(session.exec(select(Job).where(Job.resumed_from == old.id)).all()) == 1


def _finished_checkpoint(job: Job, step: int, max_steps: int) -> Path:
    from core.jobs.rundir import COMPLETE_MARKER

    ckpt = Path(job.run_dir) / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    (ckpt / COMPLETE_MARKER).write_text(str(step))
    return ckpt


def test_resume_of_a_complete_schedule_says_so_instead_of_training(session, users, project, tiny_model):
    from core.train.runs import resume_run

    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    job = add_job(session, project, users["engineer"], name="ended", status="canceled",
                  config=_train_config(tiny_model, version.id), dataset_version_id=version.id)
    _finished_checkpoint(job, 12, 12)
    with pytest.raises(InvalidInput, match="nothing left to train: its last checkpoint is at step 12 of 12"):
        resume_run(session, users["engineer"], job.id)
    assert session.exec(select(Job).where(Job.resumed_from == job.id)).first() is None
    at = page("train.py", users["engineer"]).run()
    at.button(key=f"resume{job.id}").click().run()
    assert any("nothing left to train" in e for e in _errors(at)), _errors(at)
    assert session.exec(select(Job).where(Job.resumed_from == job.id)).first() is None


def test_memory_shows_a_live_figure_while_the_run_trains(session, users, project):
    rows = [{"step": s, "total_steps": 10, "epoch": s / 10, "loss": 2.0, "eval_loss": None, "learning_rate": 1e-4,
             "tokens_per_s": 100.0, "eta_s": 30.0, "mem_mb": 1536.0 + s, "time": 0} for s in (1, 2)]
    with live_process() as proc:
        add_job(session, project, users["engineer"], name="going", pid=proc.pid, metrics=rows, estimated_peak_mb=2000)
        at = page("train.py", users["engineer"]).run()
        memory = next(m for m in at.metric if m.label == "Memory")
        assert memory.value == "1.50 GiB"


def _numbers(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) MB", text)]


@pytest.mark.parametrize("kw", [dict(method="lora", precision="fp32"), dict(method="full", precision="fp32"),
                                dict(method="lora", precision="bf16", device="cuda", gradient_checkpointing=True),
                                dict(method="qlora", precision="bf16", device="cuda")])
def test_estimate_parts_add_up_to_the_total(kw):
    from transformers import LlamaConfig

    from core.train.hardware import estimate_breakdown, estimate_peak_memory, estimate_sum_text

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    est = estimate_peak_memory(config, batch=4, max_length=256, **kw)
    assert sum(mb for _, mb in estimate_breakdown(est)) == est["peak_mb"]
    *parts, total = _numbers(estimate_sum_text(est))
    assert sum(parts) == total == est["peak_mb"]


def test_train_page_estimate_caption_adds_up(session, users, project, tiny_model):
    make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    at = page("train.py", users["engineer"]).run()
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(tiny_model)).run()
    shown = next(m.value for m in at.metric if m.label == "Estimated peak")
    caption = next(c.value for c in at.caption if " = " in c.value and "MB" in c.value)
    *parts, total = _numbers(caption)
    assert len(parts) == 5 and sum(parts) == total
    assert shown == f"{total / 1024:.2f} GiB"


def test_a_toast_says_when_a_run_ends(session, users, project):
    with live_process() as proc:
        job = add_job(session, project, users["engineer"], name="going", pid=proc.pid)
        at = page("train.py", users["engineer"]).run()
        assert not [t.value for t in at.toast]
        finish(session, job)
        at.run()
    assert f"Run {job.id} finished." in [t.value for t in at.toast]
    at.run()
    assert f"Run {job.id} finished." not in [t.value for t in at.toast]  # said once


def test_runs_table_names_the_dataset_version_in_human_columns(session, users, project):
    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1, name="spring-v3")
    add_job(session, project, users["engineer"], name="r1", status="succeeded", dataset_version_id=version.id,
            config={"method": "lora"}, result={"metrics": {"train_loss": 1.2, "global_step": 4}},
            measured_peak_mb=3072)
    at = page("runs.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    frame = at.dataframe[0].value
    assert "spring-v3" in list(frame["dataset_version_name"])
    config = json.loads(at.dataframe[0].proto.columns)  # the column_config the browser gets
    shown = {key: spec.get("label") for key, spec in config.items()}
    assert shown["dataset_version_name"] == "Version" and shown["eval_loss_last"] == "Val. loss"
    assert "reward_accuracy" not in frame.columns  # no DPO run listed: no empty reward column
    assert "run_dir" not in frame.columns and "queue_position" not in frame.columns and len(frame.columns) <= 11
