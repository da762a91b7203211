"""The job queue: submit, schedule, cancel, reconcile. Processes whose truth lives in the database.

A job is a row in ``Job`` plus a run folder under ``<workspace>/runs``. ``submit`` writes the folder's
config.json and queues the row; ``schedule`` starts queued jobs in order while device slots are free (one
job per GPU, one job at a time on a CPU machine) as ``python -m <module> --run-dir DIR`` in its own process
session, so the job outlives the browser tab and the Streamlit server. The worker reports through
core.jobs.worker. ``reconcile`` (run on server start and on every poll) turns a running row whose process is
gone, or whose heartbeat went stale, into ``failed`` with the tail of its log, so a status shown is always true.

The queue knows nothing of what a job does: the stage that submits it names the module to run, the action a
user needs to control it (core.accounts.ACTIONS), how many device slots it takes and how to launch it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta, timezone
from pathlib import Path

from sqlalchemy import or_, update
from sqlmodel import Session, select

from core.accounts import ACTIONS, can, require
from core.errors import InvalidInput, NotFound
from core.jobs import remote, rundir, scratch
from core.jobs.processes import alive, process_of, signal_job, stamps
from core.jobs.targets.registry import check_launchable, get_target
from core.locks import file_lock
from core.names import safe_file_name
from core.workspace import database_url, offline_vars, runs_dir, workspace_dir
from storage.models import DatasetVersion, Job, JobStatus, Project, User, utcnow

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TERMINAL = (JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.canceled.value)
LIVE = (JobStatus.queued.value, JobStatus.running.value)
# "torchrun" starts ``slots`` processes of the module (data parallel); "auto"/"accelerate" are older rows' names for
# it (their accelerate path never ran: `accelerate launch --cpu` starts one process here), launched the same way.
LAUNCHERS = ("python", "torchrun", "auto", "accelerate")
# ``slots`` of a job that runs on no device (a judge calling an endpoint): it starts at once, beside any job.
NO_DEVICE = -1
# A worker heartbeats every step and from a background thread every 30 s; five silent minutes means hung.
HEARTBEAT_STALE_S = float(os.environ.get("FINETUNE_STUDIO_HEARTBEAT_TIMEOUT", "300"))
# A canceled job has this long to stop after SIGTERM (finish its step, save, mark itself canceled: a training step
# and an adapter save fit in it); then its process group gets SIGKILL. Read at each cancel.
DEFAULT_CANCEL_GRACE_S = 30.0


def cancel_grace_s() -> float:
    """Seconds between a cancel's SIGTERM and its SIGKILL (FINETUNE_STUDIO_CANCEL_GRACE, default 30)."""
    return float(os.environ.get("FINETUNE_STUDIO_CANCEL_GRACE") or DEFAULT_CANCEL_GRACE_S)


# ---------------------------------------------------------------- launching


def _slug(text: str) -> str:
    """The run folder's name after the id: the job's name in ASCII letters and digits, made a safe file name."""
    return safe_file_name(re.sub(r"[^A-Za-z0-9]+", "-", text or "").lower(), default="job", max_bytes=40)


def log_path(job: Job) -> Path:
    return Path(job.run_dir or "") / rundir.log_name(job.kind)


def submit(session: Session, user: User, *, project_id: int, kind: str, action: str, name: str, config: dict,
           module: str, slots: int = 1, launcher: str = "python", dataset_version_id: int | None = None,
           eval_set_id: int | None = None, resumed_from: int | None = None,
           estimated_peak_mb: float | None = None, target_id: int | None = None) -> Job:
    """Queue a job: create its run folder with config.json, insert the row, then start it if a slot is free, or
    with ``target_id`` (a ComputeTarget) hand it to that cluster (core.jobs.remote), refused first when the
    target cannot run it (unreachable, too few nodes, a multi-host target on SQLite).

    ``action`` is what a user needs (core.accounts.ACTIONS) to submit, cancel or resume it; ``slots`` how many
    GPUs it takes where there are GPUs (0: all visible ones; NO_DEVICE: none, it never waits); ``launcher``
    "python" runs the module as one process, "torchrun" as one process per slot (per GPU, or ``slots`` CPU
    processes on a machine without GPUs)."""
    if action not in ACTIONS:
        raise InvalidInput(f"Unknown action {action!r} for a job.")
    if launcher not in LAUNCHERS:
        raise InvalidInput(f"Unknown launcher {launcher!r}; use one of: {', '.join(LAUNCHERS)}.")
    require(user, action)
    if session.get(Project, project_id) is None:
        raise NotFound(f"Project {project_id} does not exist.")
    if dataset_version_id is not None:
        version = session.get(DatasetVersion, dataset_version_id)
        if version is None or version.project_id != project_id:
            raise NotFound(f"Dataset version {dataset_version_id} does not exist in this project; "
                           "freeze one on the Datasets page first.")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module or ""):
        raise InvalidInput(f"Not a Python module name: {module!r}.")
    if target_id is not None:
        check_launchable(get_target(session, target_id), int(config.get("nodes", 1)),
                         int(config.get("procs_per_node", 1)))
    job = Job(project_id=project_id, kind=kind, action=action, slots=max(NO_DEVICE, int(slots)), launcher=launcher,
              name=(name or kind)[:200], module=module, config=config, created_by=user.id, target_id=target_id,
              dataset_version_id=dataset_version_id, eval_set_id=eval_set_id, resumed_from=resumed_from,
              estimated_peak_mb=estimated_peak_mb, status=JobStatus.queued.value)
    session.add(job)
    session.commit()
    session.refresh(job)
    run_dir = runs_dir() / f"{job.id:05d}-{_slug(name or kind)}"
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / rundir.CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    except OSError as err:
        session.delete(job)
        session.commit()
        raise InvalidInput(f"Cannot create the run folder {run_dir}: {err.strerror}.") from None
    job.run_dir = str(run_dir)
    session.add(job)
    session.commit()
    if target_id is not None:
        remote.submit_remote(session, job, cancel_grace_s())
        return job
    schedule(session)
    session.refresh(job)
    return job


def resubmit(session: Session, user: User, job: Job, config: dict | None = None,
             estimated_peak_mb: float | None = None) -> Job:
    """Queue a new job that continues a failed or canceled ``job`` (same module, kind and inputs; ``config``
    replaces its config). Refused while another continuation of it is queued or running, so a double click
    cannot start two."""
    require(user, job.action)
    session.refresh(job)
    if job.status not in (JobStatus.failed.value, JobStatus.canceled.value):
        raise InvalidInput(f"Only failed or canceled runs can be resumed; run {job.id} is {job.status}.")
    live = live_continuation(session, job)
    if live is not None:
        raise InvalidInput(f"Run {job.id} is already being resumed as run {live.id}.")
    return submit(session, user, project_id=job.project_id, kind=job.kind, action=job.action,
                  name=job.name, config=dict(job.config if config is None else config), module=job.module,
                  slots=job.slots, launcher=job.launcher or "python", dataset_version_id=job.dataset_version_id,
                  eval_set_id=job.eval_set_id, resumed_from=job.id, estimated_peak_mb=estimated_peak_mb,
                  target_id=job.target_id)


def resume_kind(session: Session, user: User, job_id: int, kind: str, what: str) -> Job:
    """Continue a failed or canceled job of ``kind`` (``what`` names it in the refusal: "a generation job")."""
    require(user, "evaluate")
    job = get_job(session, job_id)
    if job.kind != kind:
        raise InvalidInput(f"Job {job_id} is not {what}.")
    return resubmit(session, user, job)


def live_continuation(session: Session, job: Job) -> Job | None:
    """The queued or running job that continues ``job``, directly or through a chain of resumes (run 1 resumed
    as run 2, which failed and was resumed as run 3), or None: while there is one, ``job`` is not resumed again."""
    frontier, seen = [job.id], {job.id}
    while frontier:
        children = session.exec(select(Job).where(Job.resumed_from.in_(frontier)).order_by(Job.id)).all()
        for child in children:
            if child.status in LIVE:
                return child
        frontier = [c.id for c in children if c.id not in seen]
        seen.update(frontier)
    return None


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
    if job.slots is not None and job.slots < 0:  # NO_DEVICE: waits for no slot and holds none
        return 0
    if not gpu_ids():
        return 1
    wanted = int(job.slots if job.slots is not None else 1)
    return max(1, min(capacity, wanted or capacity))


def schedule(session: Session) -> list[Job]:
    """Start queued jobs, oldest first, while device slots are free; returns the jobs it started."""
    started: list[Job] = []
    # Pages, the CLI and finishing workers may schedule at once; one at a time decides who starts.
    with file_lock(runs_dir() / ".scheduler.lock"):
        session.expire_all()
        capacity = device_slots()
        here = Job.target_id.is_(None)  # jobs on a compute target take no slot of this machine
        running = list(session.exec(select(Job).where(Job.status == JobStatus.running.value, here)))
        used = sum(_slots_needed(j, capacity) for j in running)
        busy = {d for j in running for d in (j.result or {}).get("devices", [])}
        queued = session.exec(select(Job).where(Job.status == JobStatus.queued.value, here).order_by(Job.id)).all()
        blocked = False
        for job in queued:
            need = _slots_needed(job, capacity)
            if need == 0:  # a job without a device (e.g. a judge calling an endpoint) never waits for one
                if _start(session, job, []):
                    started.append(job)
                continue
            if blocked or used + need > capacity:
                blocked = True  # strict order: a big job at the head is not overtaken (only device-free jobs pass)
                continue
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
    env = os.environ.copy()
    env.update({"FINETUNE_STUDIO_HOME": str(workspace_dir()), "DATABASE_URL": database_url(),
                "FINETUNE_STUDIO_JOB_ID": str(job.id), "PYTHONUNBUFFERED": "1"})
    env.update(offline_vars())
    env["FINETUNE_STUDIO_VISIBLE_DEVICES"] = os.environ.get(
        "FINETUNE_STUDIO_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "all"))
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        with open(log_path(job), "ab") as log:
            proc = subprocess.Popen(_argv(job, len(devices) or int(job.slots or 1)), cwd=str(REPO_ROOT), env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
    except OSError as err:
        session.exec(update(Job).where(Job.id == job.id).values(
            status=JobStatus.failed.value, finished_at=utcnow(), error=f"Could not start the worker: {err}"))
        session.commit()
        return False
    session.exec(update(Job).where(Job.id == job.id).values(pid=proc.pid, **stamps(proc.pid)))
    session.commit()
    session.refresh(job)
    return True


def _argv(job: Job, n_procs: int) -> list[str]:
    """The job's command: ``python -m MODULE --run-dir DIR``, or torchrun starting ``n_procs`` of it on this machine
    (``--standalone``: its own rendezvous on a free local port, so two runs never meet)."""
    if n_procs > 1 and job.launcher in ("torchrun", "auto", "accelerate"):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_procs),
                "-m", job.module, "--run-dir", job.run_dir]
    return [sys.executable, "-m", job.module, "--run-dir", job.run_dir]


# ---------------------------------------------------------------- control


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"Run {job_id} does not exist.")
    return job


def list_jobs(session: Session, project_id: int | None = None, kind: str | None = None, *,
              user: User | None = None) -> list[Job]:
    """Jobs, newest first, optionally of one project and kind; with ``user`` (pages pass it), only the jobs that
    user's role may control (Job.action)."""
    query = select(Job).order_by(Job.id.desc())
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    jobs = list(session.exec(query))
    return jobs if user is None else [j for j in jobs if can(user, j.action)]


def cancel(session: Session, user: User, job_id: int) -> Job:
    """Queued: canceled at once. Running: SIGTERM to its process group; the worker stops at the next step,
    saves what it has and marks itself canceled. A process still there ``cancel_grace_s()`` later (busy in a
    generation, or ignoring SIGTERM) gets SIGKILL and its job is marked canceled, so its device slot frees."""
    job = get_job(session, job_id)
    require(user, job.action)
    session.refresh(job)
    if job.target_id is not None and job.status in LIVE:
        remote.cancel_remote(session, job)  # stop_job / scancel; the worker or the next reconcile records the end
    elif job.status == JobStatus.queued.value:
        session.exec(update(Job).where(Job.id == job.id, Job.status == JobStatus.queued.value).values(
            status=JobStatus.canceled.value, finished_at=utcnow(), cancel_requested=True,
            error=f"Canceled by {user.username} before it started."))
        session.commit()
    elif job.status == JobStatus.running.value:
        session.exec(update(Job).where(Job.id == job.id).values(cancel_requested=True))
        session.commit()
        if alive(job):
            signal_job(job.pid, signal.SIGTERM)
            # not a daemon: a CLI that cancels and exits still waits for the escalation (or the job's end)
            threading.Thread(target=_kill_after_grace, args=(job.id, process_of(job), cancel_grace_s()),
                             name=f"cancel-{job.id}").start()
        else:
            reconcile(session)
    else:
        raise InvalidInput(f"Run {job.id} already finished ({job.status}); nothing to cancel.")
    session.refresh(job)
    return job


def _kill_after_grace(job_id: int, probe: Job, grace: float) -> None:
    """SIGKILL the canceled job's process group if its process outlives ``grace`` seconds, then mark it canceled
    (conditionally: a status the worker wrote meanwhile stands)."""
    from storage.db import session_scope

    deadline = time.monotonic() + grace
    while alive(probe):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    else:
        return
    signal_job(probe.pid, signal.SIGKILL)
    gone_by = time.monotonic() + 10  # the device is free once the process is gone, not when the signal is sent
    while alive(probe) and time.monotonic() < gone_by:
        time.sleep(0.1)
    with session_scope() as session:
        session.exec(update(Job).where(Job.id == job_id, Job.status == JobStatus.running.value).values(
            status=JobStatus.canceled.value, finished_at=utcnow(),
            error=f"Did not stop within {grace:g} s of the cancel (SIGTERM); killed (SIGKILL)."))
        session.commit()
        schedule(session)


def ended_jobs(session: Session, project_id: int, since, kinds: tuple[str, ...] | None = None) -> list[Job]:
    """Jobs of the project that ended (succeeded, failed or canceled) after ``since``, oldest first; reconciled
    first, so a job whose process died counts as ended."""
    reconcile(session)
    query = select(Job).where(Job.project_id == project_id, Job.status.in_(TERMINAL), Job.finished_at.is_not(None),
                              Job.finished_at > since)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    return list(session.exec(query.order_by(Job.finished_at)))


def queue_position(session: Session, job: Job) -> int | None:
    """1 for the next job to start, 2 for the one after...; None when the job is not queued."""
    if job.status != JobStatus.queued.value or job.target_id is not None:  # a cluster's queue is its own
        return None
    ahead = session.exec(select(Job.id).where(Job.status == JobStatus.queued.value, Job.target_id.is_(None),
                                              Job.id < job.id)).all()
    return len(ahead) + 1


def jobs_ahead(session: Session, job: Job) -> list[Job]:
    """What a queued ``job`` waits for: the jobs holding the device now, then those queued before it."""
    if job.status != JobStatus.queued.value or job.target_id is not None:
        return []
    here = Job.target_id.is_(None)
    running = session.exec(select(Job).where(Job.status == JobStatus.running.value, here).order_by(Job.id)).all()
    queued = session.exec(select(Job).where(Job.status == JobStatus.queued.value, here, Job.id < job.id)
                          .order_by(Job.id)).all()
    return [*running, *queued]


def log_tail(job: Job, lines: int = rundir.LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the job's log ("" when there is none)."""
    return rundir.log_tail(log_path(job), lines) if job.run_dir else ""


def reconcile(session: Session) -> list[Job]:
    """Fail running jobs whose process is gone or whose heartbeat is stale; returns the jobs it changed
    (a job canceled before its worker could handle the signal becomes canceled, not failed)."""
    failed: list[Job] = []
    session.expire_all()
    now = utcnow()
    # A running job without its pid is being launched by another process (_start): not dead within a minute.
    for job in session.exec(select(Job).where(Job.status == JobStatus.running.value, Job.target_id.is_(None), or_(
            Job.pid.is_not(None), Job.started_at < now - timedelta(seconds=60)))).all():
        reason = None
        if not alive(job):
            reason = "The job's process ended without reporting a result"
        else:
            beat = job.heartbeat_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=timezone.utc)
            if beat is not None and now - beat > timedelta(seconds=HEARTBEAT_STALE_S):
                reason = f"No heartbeat for {int((now - beat).total_seconds())} s; the job looked hung and was stopped"
                signal_job(job.pid, signal.SIGKILL)
        if reason is None:
            continue
        tail = log_tail(job)
        status = JobStatus.failed.value
        if job.cancel_requested and reason.startswith("The job's process ended"):
            # SIGTERM arrived before the worker could install its handler (still importing): a cancel all the same.
            status, reason = JobStatus.canceled.value, "Canceled before training started"
        error = f"{reason}." + (f" Last lines of {log_path(job).name}:\n{tail}" if tail else "")
        # Conditional: if the worker wrote its final status meanwhile, that status stands.
        changed = session.exec(update(Job).where(Job.id == job.id, Job.status == JobStatus.running.value).values(
            status=status, finished_at=now, error=error)).rowcount
        session.commit()
        if changed:
            scratch.clean(job.run_dir)  # a dead export's hidden staging folder (hundreds of MB) goes with it
            session.refresh(job)
            failed.append(job)
    failed += remote.reconcile_remote(session, cancel_grace_s())
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
    return rundir.read_jsonl(Path(job.run_dir) / rundir.METRICS) if job.run_dir else []


def read_progress(job: Job) -> dict:
    """The last progress line a job wrote to progress.jsonl (done/total, tokens/s), or {}."""
    return rundir.last_jsonl(Path(job.run_dir) / rundir.PROGRESS) if job.run_dir else {}


def job_snapshot(session: Session, user: User, job_id: int) -> dict:
    """Everything a live view shows, after a reconcile: the job, its queue position, metrics and log tail; for
    users whose role may control the job (its action)."""
    require(user, get_job(session, job_id).action)
    reconcile(session)
    job = get_job(session, job_id)
    session.refresh(job)
    return {"job": job, "queue_position": queue_position(session, job), "metrics": read_metrics(job),
            "log_tail": remote.remote_log_tail(session, job) if job.target_id is not None else log_tail(job),
            "continued_by": live_continuation(session, job) if job.status in TERMINAL else None}
