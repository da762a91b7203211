"""Job rows for page tests, without training anything: a "running" job needs a live process (else reconcile
fails it), so it borrows a real `sleep` process started here; the run folder holds what a worker would write."""
from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path

from core.jobs import rundir
from core.jobs.processes import stamps
from core.workspace import runs_dir
from storage.models import Job, JobStatus, utcnow


@contextmanager
def live_process():
    """A real process that stays alive for the test (a job row's pid), ended afterwards."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def stubborn_process():
    """A process that ignores SIGTERM, like a worker in the middle of a long step: it stops only when killed."""
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 600"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def add_job(session, project, user, *, kind: str = "train", status: str = JobStatus.running.value,
            pid: int | None = None, name: str = "run", config: dict | None = None, metrics: list[dict] | None = None,
            progress: list[dict] | None = None, **fields) -> Job:
    """Insert a job row with a run folder (config.json, optional metrics.jsonl / progress.jsonl)."""
    fields.setdefault("module", "core.train.train_job" if kind == "train" else "core.evaluate.generate_job")
    fields.setdefault("started_at", utcnow() if status != JobStatus.queued.value else None)
    for key, value in (stamps(pid) if pid else {}).items():  # which process the pid is (a test may say otherwise)
        fields.setdefault(key, value)
    job = Job(project_id=project.id, kind=kind, action="train" if kind == "train" else "evaluate", name=name,
              status=status,
              config=config or {}, created_by=user.id, pid=pid,
              heartbeat_at=utcnow(),
              finished_at=utcnow() if status not in (JobStatus.running.value, JobStatus.queued.value) else None,
              **fields)
    session.add(job)
    session.commit()
    session.refresh(job)
    folder = Path(runs_dir()) / f"{job.id:05d}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rundir.CONFIG).write_text(json.dumps(job.config), encoding="utf-8")
    for fname, rows in ((rundir.METRICS, metrics), (rundir.PROGRESS, progress)):
        if rows is not None:
            (folder / fname).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    job.run_dir = str(folder)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def finish(session, job: Job, status: str = JobStatus.succeeded.value, **fields) -> Job:
    """Mark a job ended, as its worker would."""
    session.refresh(job)
    job.status, job.finished_at = status, utcnow()
    for key, value in fields.items():
        setattr(job, key, value)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job
