"""A training run and a generation job keep going while another process holds SQLite's write lock for 16 s
(as one long import used to): heartbeats wait in the keep-alive thread, outputs and the final status are written
once the lock is released, and the job succeeds."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from sqlmodel import select

from core.train.config import TrainConfig
from storage.models import JobStatus, Output
from tests.fixtures_models import make_dataset_version, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)
from tests.helpers import wait_for, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LOCK_S = 16


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip().endswith("}")]


def _hold_lock(workspace: Path, seconds: float) -> float:
    """BEGIN IMMEDIATE on the workspace database for ``seconds``; returns when it was taken."""
    conn = sqlite3.connect(workspace / "studio.db", isolation_level=None, timeout=60)
    conn.execute("BEGIN IMMEDIATE")
    taken = time.time()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()
    return taken


def test_a_run_stepping_through_a_16_s_lock_succeeds(session, users, project, workspace, tiny_model):
    from core.train.runs import launch

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=8, n_validation=2)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_length=96,
                      per_device_batch_size=1, max_steps=60, save_steps=1000, eval_steps=1000)
    job = launch(session, eng, project.id, cfg)
    metrics = Path(job.run_dir) / "metrics.jsonl"
    wait_until(lambda: any(r.get("loss") is not None for r in _jsonl(metrics)), 240, "the first training steps")
    step_before = max(r["step"] for r in _jsonl(metrics))
    taken = _hold_lock(workspace, LOCK_S)
    stepped_during = [r["step"] for r in _jsonl(metrics) if r.get("loss") is not None and taken < r["time"]
                      < taken + LOCK_S]
    done = wait_for(session, job.id, timeout=300)
    assert done.status == JobStatus.succeeded.value, done.error
    assert stepped_during and max(stepped_during) > step_before  # it trained on while the lock was held
    assert done.result["metrics"]["global_step"] == 60


def test_a_generation_job_through_a_16_s_lock_keeps_every_output(session, users, project, workspace, tiny_model):
    from core.evaluate.evalsets import create_eval_set_from_file
    from core.evaluate.generate import launch_generation

    eng = users["engineer"]
    prompts = "".join(json.dumps({"prompt": f"Question {i}: how do I read meter {i}?"}) + "\n" for i in range(40))
    es = create_eval_set_from_file(session, eng, project.id, "busy", prompts, "p.jsonl")
    job = launch_generation(session, eng, es.id, ["base"], base_model=str(tiny_model), batch_size=2,
                            perplexity=False, decoding={"max_new_tokens": 24})
    progress = Path(job.run_dir) / "progress.jsonl"
    wait_until(lambda: bool(_jsonl(progress)), 240, "the first generated batch")
    _hold_lock(workspace, LOCK_S)
    done = wait_for(session, job.id, timeout=300)
    assert done.status == JobStatus.succeeded.value, done.error
    assert len(session.exec(select(Output).where(Output.job_id == job.id)).all()) == 40
