"""The one lifecycle of a job process: start, heartbeat, the stop flag, the end's classification, finish.

A job process runs as ``python -m <module> --run-dir DIR`` (started by core.jobs.queue or by hand); its module's
``main`` is ``worker_main(prog, description, body)`` and all it writes is ``body(ctx)``, the work itself.
``run_worker`` does the rest, the same for every kind of job: it says the job started (``worker_start``), runs
the keep-alive thread (``ctx.beat`` on each step or batch; it also beats every 30 s while a long model load or
step runs), lets SIGTERM set the stop flag (``StopFlag``: the body stops at the next step or batch), then
classifies the end -- succeeded; canceled when the stop flag was set; failed with a clear message (a StudioError's
own words, else the exception's type and text; out of memory recognised and given its advice) -- prints the
traceback to the job's log and records the final status and result (``worker_finish``), which lets the next
queued job start.

The database may be locked by another writer for a while (a long transaction elsewhere): every write here is
retried with growing waits (storage.db.retry_busy), and step heartbeats are handed to the keep-alive thread, so
training never waits on the database and a busy database never kills a job.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import update
from sqlmodel import select

from core.errors import InvalidInput, NotFound, StudioError
from core.jobs import rundir
from core.jobs.processes import stamps
from core.jobs.queue import TERMINAL, schedule
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


def worker_main(prog: str, description: str, body: "Callable[[JobContext], dict]", argv: list[str] | None = None,
                stop: StopFlag | None = None, needs_job: bool = True) -> int:
    """The command line of a job process (``python -m <module> --run-dir DIR``): offline, SIGTERM sets the stop
    flag, find the job that owns the run folder and run ``body`` through ``run_worker``. ``needs_job=False`` also
    runs on a folder no job owns (the outcome then goes to the run folder only). Exit code 0 when the job
    succeeded or was canceled, 1 when it failed or no job owns the folder."""
    import argparse

    from core.workspace import offline_env

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--run-dir", required=True, help="run folder holding config.json")
    args = parser.parse_args(argv)
    offline_env()
    stop = (stop or StopFlag()).install()
    job_id = job_id_of_worker(args.run_dir)
    if job_id is None and needs_job:
        print(f"No job uses the run folder {args.run_dir}.", file=sys.stderr)
        return 1
    status, _ = run_worker(job_id, body, run_dir=args.run_dir, stop=stop)
    return 0 if status in (JobStatus.succeeded.value, JobStatus.canceled.value) else 1


class Stopped(Exception):
    """Raised by a body (``JobContext.check_stop``) at a step boundary once the stop flag is set."""


@dataclass
class JobContext:
    """What a job's body gets from the lifecycle, and the few things it may tell the lifecycle about its end."""

    job_id: int | None
    """The job's id; None for a worker started by hand on a folder no job owns."""
    run_dir: Path
    """The job's run folder."""
    config: dict
    """The job's config.json (the config it was queued with)."""
    stop: StopFlag
    """Set by SIGTERM (a cancel): stop at the next step or batch and return what was done."""
    keep_alive: KeepAlive
    result: dict = field(default_factory=dict)
    """The result so far: recorded when the job fails or is stopped before its body returns a result."""
    canceled_message: str = "Canceled."
    """The job's error text when it ends canceled (what was kept, how to continue)."""
    oom_advice: Callable[[], str] | None = None
    """What to try when the job runs out of memory (the job's own settings); None gives the general advice."""
    on_end: Callable[[str, str, dict | None], dict | None] | None = None
    """Called with (status, error, result) before they are recorded, however the job ended; returns the result
    to record (the training job writes result.json there)."""
    memory: dict = field(default_factory=dict)
    """measured_peak_mb / estimated_peak_mb for the job row, when the body knows them."""
    review_end: Callable[[str, str], tuple[str, str]] | None = None
    """Called with (status, error) once the end is known; returns the (status, error) to record (a training run
    of many processes tells a failed peer from a cancel there)."""

    def beat(self, **extra) -> None:
        """Progress for the job row (result["progress"]), written by the keep-alive thread; never blocks."""
        self.keep_alive.beat(**extra)

    def check_stop(self) -> None:
        """End the body here as canceled if the stop flag is set."""
        if self.stop.is_set():
            raise Stopped


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is running out of memory: torch's OutOfMemoryError, Python's MemoryError, or an error
    whose text says so (CUDA and bitsandbytes raise RuntimeErrors)."""
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(err, MemoryError) or "out of memory" in str(err).lower()


def out_of_memory(tips: list[str], what: str = "job") -> str:
    """The out-of-memory message with what to try."""
    return (f"Out of memory: the {what} needed more memory than the device has. Try " + ", ".join(tips) + ".")


GENERAL_OOM_TIPS = ["a smaller batch size", "a smaller model", "waiting until other jobs on the device finish"]


def run_worker(job_id: int | None, body: "Callable[[JobContext], dict]", *, run_dir: str | Path | None = None,
               stop: StopFlag | None = None) -> tuple[str, dict | None]:
    """Run ``body(ctx)`` as job ``job_id`` from start to recorded end; returns the final (status, result).

    Never raises for the body's failure: every end becomes a truthful status, with the traceback in the log."""
    job = worker_start(job_id) if job_id else None
    folder = Path(run_dir or job.run_dir).resolve()
    config_file = folder / rundir.CONFIG
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else dict(job.config or {})
    stop = stop if stop is not None else StopFlag()
    with KeepAlive(job_id) as keep_alive:
        ctx = JobContext(job_id=job_id, run_dir=folder, config=config, stop=stop, keep_alive=keep_alive)
        status, error, result = JobStatus.failed.value, "", None
        try:
            result = body(ctx)
            status = JobStatus.canceled.value if stop.is_set() else JobStatus.succeeded.value
            error = ctx.canceled_message if stop.is_set() else ""
        except BaseException as err:  # noqa: BLE001 - every end must be recorded as a truthful status
            traceback.print_exc()
            result = ctx.result or None
            status, error = end_of(err, ctx)
        finally:
            if ctx.review_end is not None:
                status, error = ctx.review_end(status, error)
            if ctx.on_end is not None:
                result = ctx.on_end(status, error, result)
            if job_id:
                worker_finish(job_id, status, error, result=result, **ctx.memory)
    return status, result


def end_of(err: BaseException, ctx: JobContext) -> tuple[str, str]:
    """The status and message a body's exception ends its job with."""
    if isinstance(err, (KeyboardInterrupt, Stopped)) or ctx.stop.is_set() and not is_oom(err):
        return JobStatus.canceled.value, ctx.canceled_message
    if is_oom(err):
        return JobStatus.failed.value, ctx.oom_advice() if ctx.oom_advice else out_of_memory(GENERAL_OOM_TIPS)
    if isinstance(err, StudioError):
        return JobStatus.failed.value, str(err)
    return JobStatus.failed.value, f"{type(err).__name__}: {err}".strip()[:2000]


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
            stamp = stamps(os.getpid())
            job.pid_create_time, job.pid_ident = stamp["pid_create_time"], stamp["pid_ident"]
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
