"""Background jobs (training and generation): processes whose truth lives in the database.

A job is a row in ``Job`` plus a run folder under ``<workspace>/runs``. ``submit`` writes the folder's
config.json and queues the row; ``schedule`` starts queued jobs in order while a device slot is free (one
job per GPU, one job at a time on a CPU machine) as ``python -m <module> --run-dir DIR`` in its own process
session, so the job outlives the browser tab and the Streamlit server. The worker reports through
``worker_start`` / ``heartbeat`` / ``worker_finish``. ``reconcile`` (run on server start and on every poll)
turns a running row whose process is gone, or whose heartbeat went stale, into ``failed`` with the tail of
its log, so a status shown is always true.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from sqlalchemy import update
from sqlmodel import Session, select

from core.accounts import require
from core.errors import InvalidInput, NotFound
from core.workspace import database_url, runs_dir, workspace_dir
from storage.models import DatasetVersion, Job, JobStatus, Project, User, utcnow

REPO_ROOT = Path(__file__).resolve().parent.parent
KINDS = {"train": "train", "generate": "evaluate"}  # job kind -> action the acting user needs
LOG_NAMES = {"train": "train.log", "generate": "job.log"}
TERMINAL = (JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.canceled.value)
# A worker heartbeats every step and from a background thread every 30 s; five silent minutes means hung.
HEARTBEAT_STALE_S = float(os.environ.get("FINETUNE_STUDIO_HEARTBEAT_TIMEOUT", "300"))
LOG_TAIL_LINES = 30


# ---------------------------------------------------------------- launching


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text or "").strip("-").lower()
    return slug[:40] or "job"


def log_name(job: Job) -> str:
    return LOG_NAMES.get(job.kind, "job.log")


def submit(session: Session, user: User, *, project_id: int, kind: str, name: str, config: dict, module: str,
           dataset_version_id: int | None = None, eval_set_id: int | None = None,
           resumed_from: int | None = None, estimated_peak_mb: float | None = None) -> Job:
    """Queue a job: create its run folder with config.json, insert the row, then start it if a slot is free."""
    if kind not in KINDS:
        raise InvalidInput(f"Unknown job kind {kind!r}; use one of: {', '.join(KINDS)}.")
    require(user, KINDS[kind])
    if session.get(Project, project_id) is None:
        raise NotFound(f"Project {project_id} does not exist.")
    if dataset_version_id is not None:
        version = session.get(DatasetVersion, dataset_version_id)
        if version is None or version.project_id != project_id:
            raise NotFound(f"Dataset version {dataset_version_id} does not exist in this project; "
                           "freeze one on the Datasets page first.")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module or ""):
        raise InvalidInput(f"Not a Python module name: {module!r}.")
    job = Job(project_id=project_id, kind=kind, name=(name or kind)[:200], module=module, config=config,
              created_by=user.id, dataset_version_id=dataset_version_id, eval_set_id=eval_set_id,
              resumed_from=resumed_from, estimated_peak_mb=estimated_peak_mb, status=JobStatus.queued.value)
    session.add(job)
    session.commit()
    session.refresh(job)
    run_dir = runs_dir() / f"{job.id:05d}-{_slug(name or kind)}"
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    except OSError as err:
        session.delete(job)
        session.commit()
        raise InvalidInput(f"Cannot create the run folder {run_dir}: {err.strerror}.") from None
    job.run_dir = str(run_dir)
    session.add(job)
    session.commit()
    schedule(session)
    session.refresh(job)
    return job


def gpu_ids() -> list[str]:
    """The NVIDIA GPUs jobs may use (as CUDA_VISIBLE_DEVICES entries), read from the environment and /proc
    without importing torch, so pages that poll stay fast. A worker sees only its own GPUs in
    CUDA_VISIBLE_DEVICES, so the launcher's view travels in FINETUNE_STUDIO_VISIBLE_DEVICES."""
    visible = os.environ.get("FINETUNE_STUDIO_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None and visible != "all":
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def device_slots() -> int:
    """How many jobs may run at once: one per visible NVIDIA GPU, one on a CPU machine."""
    return max(1, len(gpu_ids()))


def _slots_needed(job: Job, capacity: int) -> int:
    if job.kind != "train":
        return 1
    wanted = int((job.config or {}).get("num_gpus") or 0)
    return max(1, min(capacity, wanted or capacity)) if gpu_ids() else 1


@contextmanager
def _scheduler_lock() -> Iterator[None]:
    """Pages, the CLI and finishing workers may schedule at once; one at a time decides who starts."""
    folder = runs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".scheduler.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def schedule(session: Session) -> list[Job]:
    """Start queued jobs, oldest first, while device slots are free; returns the jobs it started."""
    started: list[Job] = []
    with _scheduler_lock():
        session.expire_all()
        capacity = device_slots()
        running = list(session.exec(select(Job).where(Job.status == JobStatus.running.value)))
        used = sum(_slots_needed(j, capacity) for j in running)
        busy = {d for j in running for d in (j.result or {}).get("devices", [])}
        queued = session.exec(select(Job).where(Job.status == JobStatus.queued.value).order_by(Job.id)).all()
        for job in queued:
            need = _slots_needed(job, capacity)
            if used + need > capacity:
                break  # strict order: a big job at the head is not overtaken
            free = [i for i in gpu_ids() if i not in busy][:need]
            if _start(session, job, free):
                started.append(job)
                used += need
                busy.update(free)
    return started


def _start(session: Session, job: Job, devices: list[str]) -> bool:
    # Claim the row first, so a worker that finishes instantly cannot be overwritten by this launcher.
    claimed = session.exec(
        update(Job).where(Job.id == job.id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.running.value, started_at=utcnow(), heartbeat_at=utcnow(),
                result={"devices": devices})
    ).rowcount
    session.commit()
    if not claimed:
        return False
    run_dir = Path(job.run_dir)
    argv = _argv(job, len(devices))
    env = os.environ.copy()
    env.update({"FINETUNE_STUDIO_HOME": str(workspace_dir()), "DATABASE_URL": database_url(),
                "FINETUNE_STUDIO_JOB_ID": str(job.id), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    if os.environ.get("FINETUNE_STUDIO_ONLINE") != "1":
        env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env["FINETUNE_STUDIO_VISIBLE_DEVICES"] = os.environ.get(
        "FINETUNE_STUDIO_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "all"))
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        with open(run_dir / log_name(job), "ab") as log:
            proc = subprocess.Popen(argv, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except OSError as err:
        session.exec(update(Job).where(Job.id == job.id).values(
            status=JobStatus.failed.value, finished_at=utcnow(), error=f"Could not start the worker: {err}"))
        session.commit()
        return False
    session.exec(update(Job).where(Job.id == job.id).values(pid=proc.pid, pid_create_time=_create_time(proc.pid)))
    session.commit()
    session.refresh(job)
    return True


def _argv(job: Job, n_devices: int) -> list[str]:
    launcher = (job.config or {}).get("launcher", "auto") if job.kind == "train" else "python"
    if n_devices > 1 and launcher in ("auto", "accelerate"):
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n_devices),
                "--num_machines", "1", "-m", job.module, "--run-dir", job.run_dir]
    return [sys.executable, "-m", job.module, "--run-dir", job.run_dir]


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# ---------------------------------------------------------------- worker side (runs inside the job process)


def job_id_for_run_dir(session: Session, run_dir: str | Path) -> Job:
    """The job row whose run folder is ``run_dir``."""
    job = session.exec(select(Job).where(Job.run_dir == str(Path(run_dir).resolve()))).first()
    if job is None:
        job = session.exec(select(Job).where(Job.run_dir == str(run_dir))).first()
    if job is None:
        raise NotFound(f"No job uses the run folder {run_dir}.")
    return job


def worker_start(job_id: int) -> Job:
    """Called by the worker when it starts: records its pid (if the launcher could not) and a heartbeat."""
    from storage.db import session_scope

    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"Job {job_id} does not exist.")
        if job.pid is None:
            job.pid = os.getpid()
            job.pid_create_time = _create_time(os.getpid())
        if job.status == JobStatus.queued.value:  # started by hand (python -m core.train) rather than schedule()
            job.status = JobStatus.running.value
            job.started_at = utcnow()
        job.heartbeat_at = utcnow()
        session.add(job)
    return job


def heartbeat(job_id: int, **extra) -> None:
    """Mark the worker alive; ``extra`` (e.g. step, loss) is kept under result["progress"]."""
    from storage.db import session_scope

    with session_scope() as session:
        values: dict = {"heartbeat_at": utcnow()}
        if extra:
            job = session.get(Job, job_id)
            if job is None:
                return
            result = dict(job.result or {})
            result["progress"] = {**result.get("progress", {}), **extra}
            values["result"] = result
        session.exec(update(Job).where(Job.id == job_id).values(**values))


def worker_finish(job_id: int, status: str, error: str = "", result: dict | None = None,
                  measured_peak_mb: float | None = None, estimated_peak_mb: float | None = None) -> None:
    """Record the worker's final status and result, then let the next queued job start."""
    from storage.db import session_scope

    if status not in TERMINAL:
        raise InvalidInput(f"A finished job is succeeded, failed or canceled, not {status!r}.")
    with session_scope() as session:
        values = {"status": status, "error": error or "", "finished_at": utcnow(), "heartbeat_at": utcnow()}
        if result is not None:
            values["result"] = result
        if measured_peak_mb is not None:
            values["measured_peak_mb"] = measured_peak_mb
        if estimated_peak_mb is not None:
            values["estimated_peak_mb"] = estimated_peak_mb
        session.exec(update(Job).where(Job.id == job_id, Job.status.in_(
            [JobStatus.running.value, JobStatus.queued.value])).values(**values))
    with session_scope() as session:
        # Our own process is still alive and holds no slot any more in spirit: count it as finished.
        schedule(session)


# ---------------------------------------------------------------- control


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"Run {job_id} does not exist.")
    return job


def list_jobs(session: Session, project_id: int | None = None, kind: str | None = None) -> list[Job]:
    """Jobs, newest first, optionally of one project and kind."""
    query = select(Job).order_by(Job.id.desc())
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return list(session.exec(query))


def cancel(session: Session, user: User, job_id: int) -> Job:
    """Queued: canceled at once. Running: SIGTERM to its process group; the worker stops at the next step,
    saves what it has and marks itself canceled."""
    job = get_job(session, job_id)
    require(user, KINDS.get(job.kind, "train"))
    session.refresh(job)
    if job.status == JobStatus.queued.value:
        session.exec(update(Job).where(Job.id == job.id, Job.status == JobStatus.queued.value).values(
            status=JobStatus.canceled.value, finished_at=utcnow(), cancel_requested=True,
            error=f"Canceled by {user.username} before it started."))
        session.commit()
    elif job.status == JobStatus.running.value:
        session.exec(update(Job).where(Job.id == job.id).values(cancel_requested=True))
        session.commit()
        if _alive(job):
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            reconcile(session)
    else:
        raise InvalidInput(f"Run {job.id} already finished ({job.status}); nothing to cancel.")
    session.refresh(job)
    return job


def resume(session: Session, user: User, job_id: int) -> Job:
    """Continue a failed or canceled job as a new job (training: from its last complete checkpoint)."""
    job = get_job(session, job_id)
    require(user, KINDS.get(job.kind, "train"))
    if job.status not in (JobStatus.failed.value, JobStatus.canceled.value):
        raise InvalidInput(f"Only failed or canceled runs can be resumed; run {job.id} is {job.status}.")
    if job.kind == "train":
        from core.train import resume_run

        return resume_run(session, user, job)
    return submit(session, user, project_id=job.project_id, kind=job.kind, name=job.name, config=dict(job.config),
                  module=job.module, dataset_version_id=job.dataset_version_id, eval_set_id=job.eval_set_id,
                  resumed_from=job.id)


def queue_position(session: Session, job: Job) -> int | None:
    """1 for the next job to start, 2 for the one after...; None when the job is not queued."""
    if job.status != JobStatus.queued.value:
        return None
    ahead = session.exec(select(Job.id).where(Job.status == JobStatus.queued.value, Job.id < job.id)).all()
    return len(ahead) + 1


def _alive(job: Job) -> bool:
    """Whether the job's own process still runs (not gone, not a zombie, not a later process with its pid)."""
    import psutil

    if not job.pid:
        return False
    try:
        proc = psutil.Process(job.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(job.pid)
            return False
        if job.pid_create_time and abs(proc.create_time() - job.pid_create_time) > 1.0:
            return False
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists but we may not inspect it


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(job: Job, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the job's log ("" when there is none)."""
    if not job.run_dir:
        return ""
    path = Path(job.run_dir) / log_name(job)
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    # Progress bars redraw with carriage returns; keep only the final state of each line.
    cleaned = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])


def reconcile(session: Session) -> list[Job]:
    """Fail running jobs whose process is gone or whose heartbeat is stale; returns the jobs it changed
    (a job canceled before its worker could handle the signal becomes canceled, not failed)."""
    failed: list[Job] = []
    session.expire_all()
    now = utcnow()
    for job in session.exec(select(Job).where(Job.status == JobStatus.running.value)).all():
        reason = None
        if not _alive(job):
            reason = "The job's process ended without reporting a result"
        else:
            beat = job.heartbeat_at
            if beat is not None and beat.tzinfo is None:
                from datetime import timezone

                beat = beat.replace(tzinfo=timezone.utc)
            if beat is not None and now - beat > timedelta(seconds=HEARTBEAT_STALE_S):
                reason = f"No heartbeat for {int((now - beat).total_seconds())} s; the job looked hung and was stopped"
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if reason is None:
            continue
        tail = log_tail(job)
        status = JobStatus.failed.value
        if job.cancel_requested and reason.startswith("The job's process ended"):
            # SIGTERM arrived before the worker could install its handler (still importing): a cancel all the same.
            status, reason = JobStatus.canceled.value, "Canceled before training started"
        error = f"{reason}." + (f" Last lines of {log_name(job)}:\n{tail}" if tail else "")
        # Conditional: if the worker wrote its final status meanwhile, that status stands.
        changed = session.exec(update(Job).where(Job.id == job.id, Job.status == JobStatus.running.value).values(
            status=status, finished_at=now, error=error)).rowcount
        session.commit()
        if changed:
            session.refresh(job)
            failed.append(job)
    queued = session.exec(select(Job.id).where(Job.status == JobStatus.queued.value)).first()
    if failed or queued is not None:
        schedule(session)
    return failed


def reconcile_on_start() -> list[Job]:
    """Run by `finetune-studio serve`: jobs whose process died while the server was down become failed."""
    from storage.db import init_db, session_scope

    init_db()
    with session_scope() as session:
        return reconcile(session)


def read_metrics(job: Job) -> list[dict]:
    """The lines of the job's metrics.jsonl (an incomplete last line, mid-write, is skipped)."""
    path = Path(job.run_dir or "") / "metrics.jsonl"
    if not job.run_dir or not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def job_snapshot(session: Session, job_id: int) -> dict:
    """Everything a live view shows, after a reconcile: the job, its queue position, metrics and log tail."""
    reconcile(session)
    job = get_job(session, job_id)
    session.refresh(job)
    return {"job": job, "queue_position": queue_position(session, job), "metrics": read_metrics(job),
            "log_tail": log_tail(job)}
