"""The one job lifecycle (core.jobs.worker.run_worker / worker_main) every job process goes through: how a body's
end is recorded -- succeeded, canceled when the stop flag was set (a real SIGTERM), failed with a clear message,
out of memory recognised and given its advice -- and that every job module uses it."""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.jobs.worker import StopFlag, run_worker
from core.workspace import database_url, workspace_dir
from storage.models import Job, JobStatus
from tests.fixtures_jobs import add_job
from tests.helpers import ROOT
from tests.lifecycle_worker import body

JOB_MODULES = ("core.train.train_job", "core.evaluate.generate_job", "core.evaluate.draft_job",
               "core.ship.export_job", "core.ship.serve_job")


def _job(session, project, users, end: str) -> Job:
    job = add_job(session, project, users["engineer"], kind="generate", name=end, config={"end": end})
    job.module = "tests.lifecycle_worker"  # what the queue would start; the tests start it themselves
    session.add(job)
    session.commit()
    return job


def _row(session, job: Job) -> Job:
    session.expire_all()
    return session.get(Job, job.id)


def _process(job: Job) -> subprocess.Popen:
    env = {**os.environ, "FINETUNE_STUDIO_HOME": str(workspace_dir()), "DATABASE_URL": database_url(),
           "FINETUNE_STUDIO_JOB_ID": str(job.id)}
    return subprocess.Popen([sys.executable, "-m", "tests.lifecycle_worker", "--run-dir", job.run_dir], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_body_that_returns_succeeds_with_its_result(session, project, users):
    job = _job(session, project, users, "succeed")
    assert run_worker(job.id, body, stop=StopFlag()) == (JobStatus.succeeded.value, {"answer": 42})
    row = _row(session, job)
    assert (row.status, row.error, row.result) == (JobStatus.succeeded.value, "", {"answer": 42})
    assert row.pid == os.getpid() and row.finished_at is not None


@pytest.mark.slow
def test_a_body_that_raises_fails_with_the_error_and_the_traceback_in_the_log(session, project, users):
    job = _job(session, project, users, "raise")
    proc = _process(job)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    row = _row(session, job)
    assert (row.status, row.error) == (JobStatus.failed.value, "ValueError: the body broke")
    assert row.result == {"started": True}  # what the body had done is kept
    assert "Traceback" in out and "the body broke" in out


def test_a_studio_error_fails_in_its_own_words(session, project, users):
    job = _job(session, project, users, "studio_error")
    assert run_worker(job.id, body, stop=StopFlag())[0] == JobStatus.failed.value
    assert _row(session, job).error == "The eval set has no prompts."


def test_a_set_stop_flag_ends_canceled_through_a_real_sigterm(session, project, users):
    job = _job(session, project, users, "wait_for_stop")
    proc = _process(job)
    assert proc.stdout.readline().strip() == "waiting for the stop flag"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    row = _row(session, job)
    assert (row.status, row.error) == (JobStatus.canceled.value, "Canceled; what was done is kept.")
    assert row.result == {"answer": 42}


@pytest.mark.parametrize("end", ["memory_error", "torch_oom"])
def test_out_of_memory_fails_with_advice(session, project, users, end):
    job = _job(session, project, users, end)
    assert run_worker(job.id, body, stop=StopFlag())[0] == JobStatus.failed.value
    error = _row(session, job).error
    assert error.startswith("Out of memory:") and "smaller batch size" in error, error
    assert "Traceback" not in error and "OutOfMemoryError" not in error


def test_the_training_job_names_its_own_settings_when_out_of_memory():
    from core.train.config import TrainConfig
    from core.train.train_job import oom_advice

    advice = oom_advice(TrainConfig(per_device_batch_size=8, gradient_checkpointing=False), 1024)
    assert advice.startswith("Out of memory: the run needed more memory") and "now 8" in advice
    assert "1024" in advice and "gradient_checkpointing" in advice


def test_every_job_module_is_a_body_run_by_the_one_lifecycle():
    """Each job process's main is worker_main with a body; none records its own start or end."""
    for name in JOB_MODULES:
        source = Path(importlib.import_module(name).__file__).read_text(encoding="utf-8")
        assert "worker_main(" in source, name
        for own in ("worker_start(", "worker_finish(", "KeepAlive(", "traceback.print_exc", "except BaseException"):
            assert own not in source, f"{name} writes {own} itself"
