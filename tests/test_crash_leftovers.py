"""A killed job leaves nothing behind: the export's hidden staging folder (a merged model: hundreds of MB) is
removed when reconcile marks the dead job failed, not at the next export to the same place."""
from __future__ import annotations

import subprocess
from pathlib import Path

from core.jobs import scratch
from core.jobs.queue import get_job, reconcile
from core.ship.export_job import staging_dir
from tests.fixtures_jobs import add_job


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_killed_exports_staging_folder_goes_when_it_is_marked_failed(session, users, project, tmp_path):
    out = tmp_path / "ship" / "my-model"
    job = add_job(session, project, users["engineer"], kind="export", name="export", config={"out_dir": str(out)})
    staging = staging_dir(out)
    # What the export worker does before writing (core.ship.export_job.export_run), then half a merged model.
    scratch.register(job.run_dir, staging)
    (staging / "merged").mkdir(parents=True)
    (staging / "merged" / "model.safetensors").write_bytes(b"\0" * 4096)
    job.pid = _dead_pid()  # the worker was SIGKILLed: no finally ran
    session.add(job)
    session.commit()

    failed = reconcile(session)

    assert [j.id for j in failed] == [job.id]
    assert get_job(session, job.id).status == "failed"
    assert not staging.exists(), "the dead export's staging folder is still on disk"
    assert not out.exists()  # nothing was shipped, and nothing appears


def test_a_finished_export_keeps_what_it_shipped(session, users, project, tmp_path):
    out = tmp_path / "ship" / "done"
    job = add_job(session, project, users["engineer"], kind="export", name="export", config={"out_dir": str(out)})
    staging = staging_dir(out)
    scratch.register(job.run_dir, staging)
    staging.mkdir(parents=True)
    (staging / "report.json").write_text("{}")
    staging.rename(out)  # the export renamed its staging folder into place, then died before reporting
    job.pid = _dead_pid()
    session.add(job)
    session.commit()

    reconcile(session)

    assert (out / "report.json").is_file()
    assert not Path(job.run_dir, scratch.SCRATCH).exists()
