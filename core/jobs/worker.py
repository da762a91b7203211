"""What a job process calls: start, heartbeat, finish, the stop flag and the keep-alive thread.

A worker runs as ``python -m <module> --run-dir DIR`` (started by core.jobs.queue or by hand). It says it
started (``worker_start``), heartbeats while it works (``KeepAlive.beat`` on each step or batch, written by the
keep-alive thread, which also beats every 30 s while a long model load or step runs), stops at the next step
when SIGTERM arrives (``StopFlag``) and records its final status and result (``worker_finish``), which lets the
next queued job start.

The database may be locked by another writer for a while (a long transaction elsewhere): every write here is
retried with growing waits (storage.db.retry_busy), and step heartbeats are handed to the keep-alive thread, so
training never waits on the database and a busy database never kills a job.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import select

from core.errors import InvalidInput, NotFound, StudioError
from core.jobs.queue import TERMINAL, create_time, schedule
from storage.db import retry_busy, session_scope
from storage.models import Job, JobStatus, utcnow

KEEP_ALIVE_S = 30.0


class StopFlag:
    """Set by SIGTERM (core.jobs.queue.cancel): the worker stops after the current step or batch, keeps what it
    has and reports canceled."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> "StopFlag":
        signal.signal(signal.SIGTERM, lambda *_: self._event.set())
        return self

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class KeepAlive:
    """Heartbeats from a background thread while the block runs: every ``every_s``, and soon after each ``beat``
    (core.jobs.queue.reconcile fails a job whose heartbeat goes stale). ``beat`` only hands the progress over and
    returns at once, so a step never waits on a busy database; the thread retries until the write goes through."""

    def __init__(self, job_id: int | None, every_s: float = KEEP_ALIVE_S) -> None:
        self.job_id, self.every_s = job_id, every_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict = {}
        self._thread: threading.Thread | None = None

    def start(self) -> "KeepAlive":
        if self.job_id and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keep-alive", daemon=True)
            self._thread.start()
        return self

    def beat(self, **extra) -> None:
        """Record progress (kept under result["progress"]) for the thread to write; never blocks."""
        with self._lock:
            self._pending.update(extra)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def __enter__(self) -> "KeepAlive":
        return self.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                extra, self._pending = self._pending, {}
            try:
                retry_busy(lambda: heartbeat(self.job_id, **extra), give_up_after_s=3 * self.every_s)  # noqa: B023 - called at once
            except Exception as err:  # noqa: BLE001 - a missed heartbeat is retried on the next round
                with self._lock:
                    self._pending = {**extra, **self._pending}
                print(f"heartbeat not written yet ({err}); retrying", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        self.stop()


def job_for_run_dir(session, run_dir: str | Path) -> Job:
    """The job row whose run folder is ``run_dir``."""
    job = session.exec(select(Job).where(Job.run_dir == str(Path(run_dir).resolve()))).first()
    if job is None:
        job = session.exec(select(Job).where(Job.run_dir == str(run_dir))).first()
    if job is None:
        raise NotFound(f"No job uses the run folder {run_dir}.")
    return job


def job_id_of_worker(run_dir: str | Path) -> int | None:
    """This worker's job id: from FINETUNE_STUDIO_JOB_ID (set by the launcher), else the row that owns the run
    folder, else None (a worker started by hand on a folder no job owns)."""
    if os.environ.get("FINETUNE_STUDIO_JOB_ID"):
        return int(os.environ["FINETUNE_STUDIO_JOB_ID"])
    try:
        with session_scope() as session:
            return job_for_run_dir(session, run_dir).id
    except NotFound:
        return None


def worker_main(prog: str, description: str, stop: StopFlag, run_job, argv: list[str] | None = None) -> int:
    """The command line of a job process (``python -m <module> --run-dir DIR``): offline, SIGTERM sets ``stop``,
    find the job that owns the run folder and call ``run_job(job_id)``, which records its own final status.
    Exit code 0 when ``run_job`` returned something true, else 1."""
    import argparse

    from core.workspace import offline_env

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--run-dir", required=True, help="run folder holding config.json")
    args = parser.parse_args(argv)
    offline_env()
    stop.install()
    job_id = job_id_of_worker(args.run_dir)
    if job_id is None:
        print(f"No job uses the run folder {args.run_dir}.", file=sys.stderr)
        return 1
    try:
        return 0 if run_job(job_id) else 1
    except Exception:  # the worker recorded the failure and printed the traceback to its log
        return 1


def worker_start(job_id: int) -> Job:
    """Called by the worker when it starts: records its pid (if the launcher could not) and a heartbeat."""
    return retry_busy(lambda: _worker_start(job_id))


def _worker_start(job_id: int) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"Job {job_id} does not exist.")
        if job.pid is None:
            job.pid = os.getpid()
            job.pid_create_time = create_time(os.getpid())
        if job.status == JobStatus.queued.value:  # started by hand (python -m ...) rather than by schedule()
            job.status = JobStatus.running.value
            job.started_at = utcnow()
        job.heartbeat_at = utcnow()
        session.add(job)
    return job


def heartbeat(job_id: int, **extra) -> None:
    """Mark the worker alive; ``extra`` (e.g. step, loss) is kept under result["progress"]. Only a running job
    is touched: a beat from the keep-alive thread that lands after worker_finish must not overwrite the result."""
    with session_scope() as session:
        values: dict = {"heartbeat_at": utcnow()}
        if extra:
            job = session.get(Job, job_id)
            if job is None:
                return
            result = dict(job.result or {})
            result["progress"] = {**result.get("progress", {}), **extra}
            values["result"] = result
        session.exec(update(Job).where(Job.id == job_id, Job.status == JobStatus.running.value).values(**values))


def worker_finish(job_id: int, status: str, error: str = "", result: dict | None = None,
                  measured_peak_mb: float | None = None, estimated_peak_mb: float | None = None) -> None:
    """Record the worker's final status and result, then let the next queued job start."""
    if status not in TERMINAL:
        raise InvalidInput(f"A finished job is succeeded, failed or canceled, not {status!r}.")
    values: dict[str, Any] = {"status": status, "error": error or ""}
    if result is not None:
        values["result"] = result
    if measured_peak_mb is not None:
        values["measured_peak_mb"] = measured_peak_mb
    if estimated_peak_mb is not None:
        values["estimated_peak_mb"] = estimated_peak_mb

    def record() -> None:
        with session_scope() as session:
            session.exec(update(Job).where(Job.id == job_id, Job.status.in_(
                [JobStatus.running.value, JobStatus.queued.value])).values(
                **values, finished_at=utcnow(), heartbeat_at=utcnow()))

    retry_busy(record)  # the job's outcome must reach the database, however long another writer holds it

    def start_next() -> None:
        with session_scope() as session:
            # Our own process is still alive but holds no slot any more in spirit: count it as finished.
            schedule(session)

    try:
        retry_busy(start_next, give_up_after_s=60)
    except StudioError as err:  # the server's reconcile timer starts the next job instead
        print(f"could not start the next queued job: {err}", file=sys.stderr, flush=True)
