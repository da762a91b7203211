"""Truthful answers when a run's files are gone or damaged: Resume says there is no checkpoint (and does
nothing), and a merge of a run whose config.json is corrupted fails with one line naming the file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInput
from storage.models import Job, JobStatus
from tests.fixtures_models import tiny_model_fixture  # noqa: F401 (the tiny_model fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _run_row(session, project, user, run_dir: Path, status=JobStatus.failed.value, config=None) -> Job:
    job = Job(project_id=project.id, kind="train", module="core.train.train_job", action="train", name="old run",
              status=status, run_dir=str(run_dir), created_by=user.id,
              config=config or {"base_model": "embedded:SmolLM2-135M-Instruct", "dataset_version_id": 1})
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def test_resume_with_the_run_folder_deleted_is_refused_with_the_reason(session, users, project, tmp_path):
    from core.train.runs import resume_run

    folder = tmp_path / "runs" / "00001-old"
    (folder / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    job = _run_row(session, project, users["engineer"], folder)
    shutil.rmtree(folder)
    with pytest.raises(InvalidInput) as err:
        resume_run(session, users["engineer"], job.id)
    message = str(err.value)
    assert "no longer exists" in message and "no checkpoint to resume from" in message
    assert "Nothing was started" in message
    assert session.exec(__import__("sqlmodel").select(Job)).all() == [job]


def test_merge_of_a_run_with_a_corrupted_config_is_one_line(session, users, project, workspace, tiny_model,
                                                           tmp_path):
    from tests.fixtures_models import random_adapter as _adapter

    folder = _adapter(str(tiny_model), workspace / "runs" / "00001-lora", seed=1)
    job = _run_row(session, project, users["engineer"], folder, status=JobStatus.succeeded.value,
                   config={"base_model": str(tiny_model)})
    (folder / "config.json").write_text('{"base_model": "', encoding="utf-8")  # cut off mid-write
    out = subprocess.run([sys.executable, "-m", "core.cli", "runs", "merge", str(job.id), "--out",
                          str(tmp_path / "merged")], capture_output=True, text=True, cwd=ROOT, timeout=240,
                         env=dict(os.environ, FINETUNE_STUDIO_HOME=str(workspace)))
    assert out.returncode == 1
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "config.json" in errors[0] and "is not valid JSON" in errors[0], errors[0]
    assert not (tmp_path / "merged").exists()


def test_the_resume_message_says_where_the_new_run_starts():
    from core.train.runs import resume_note

    from_checkpoint = Job(id=7, resumed_from=3, config={"resume_from": "/ws/runs/00003-x/checkpoints/checkpoint-12"})
    from_scratch = Job(id=8, resumed_from=4, config={"resume_from": ""})
    assert resume_note(from_checkpoint) == "Run 7 continues run 3 from step 12, its last complete checkpoint."
    assert resume_note(from_scratch) == "Run 4 saved no complete checkpoint, so run 8 starts again from step 0."
