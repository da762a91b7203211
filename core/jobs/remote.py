"""The queue's side of jobs that run on a compute target (Job.target_id set): submit to the cluster instead of
starting a local process (no device slot of this machine is taken), map the cluster's state onto the row on each
reconcile, stop the cluster job on cancel, and show its log.

The row stays the truth: queued while the cluster holds the job pending (its state and reason in remote_state
and remote_reason), running once the cluster runs it, and the worker's own finish decides the end. A cluster job
that ended while the row is still live (the worker never wrote its finish: a node died, the job was killed)
becomes failed with the cluster's reason and the log tail; stopped on the cluster after a cancel, canceled.
"""
from __future__ import annotations

from pathlib import Path

import os
from datetime import timedelta, timezone

from sqlalchemy import update
from sqlmodel import Session, select

from core.jobs import rundir
from core.jobs.targets import Launch, RemoteState, Target
from core.jobs.targets.base import GRACE_ENV, LOG_ENV
from core.jobs.targets.registry import build
from core.workspace import database_url, offline_vars, workspace_dir
from storage.models import ComputeTarget, Job, JobStatus, utcnow

LIVE = (JobStatus.queued.value, JobStatus.running.value)
# A worker beats every step and every 30 s; a cluster job silent this long while its cluster says it runs is hung.
HEARTBEAT_STALE_S = float(os.environ.get("FINETUNE_STUDIO_HEARTBEAT_TIMEOUT", "300"))
LOG_TAIL = 40


def target_of(session: Session, job: Job) -> Target:
    return build(session.get(ComputeTarget, job.target_id))


def launch_of(job: Job, cancel_grace_s: float) -> Launch:
    """What the target runs for ``job``: its module on ``nodes`` x ``procs_per_node`` ranks (from config.json),
    with the workspace, database and job id every rank needs."""
    config = job.config or {}
    env = {"FINETUNE_STUDIO_HOME": str(workspace_dir()), "DATABASE_URL": database_url(),
           "FINETUNE_STUDIO_JOB_ID": str(job.id), LOG_ENV: rundir.log_name(job.kind),
           GRACE_ENV: str(int(cancel_grace_s)), **offline_vars()}
    return Launch(job_id=job.id, run_dir=Path(job.run_dir), module=job.module, nodes=int(config.get("nodes", 1)),
                  procs_per_node=int(config.get("procs_per_node", 1)), env=env)


def submit_remote(session: Session, job: Job, cancel_grace_s: float) -> None:
    """Hand a queued job to its target; a refusal by the cluster fails the row with the cluster's words."""
    try:
        external = target_of(session, job).submit(launch_of(job, cancel_grace_s))
    except Exception as err:  # noqa: BLE001 - whatever the cluster says, the row must say it, not hang queued
        session.exec(update(Job).where(Job.id == job.id).values(
            status=JobStatus.failed.value, finished_at=utcnow(), remote_state="failed",
            error=f"The compute target refused the job: {err}"))
    else:
        session.exec(update(Job).where(Job.id == job.id).values(external_id=external, remote_state="pending",
                                                                remote_reason="Submitted to the cluster"))
    session.commit()
    session.refresh(job)


def cancel_remote(session: Session, job: Job) -> None:
    """Ask the cluster to stop the job (returns at once); the worker stops after its step and records canceled,
    or the next reconcile does once the cluster says the job ended."""
    session.exec(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.commit()
    if job.external_id:
        target_of(session, job).stop(job.external_id)
    else:  # never reached the cluster
        session.exec(update(Job).where(Job.id == job.id, Job.status.in_(LIVE)).values(
            status=JobStatus.canceled.value, finished_at=utcnow(), error="Canceled before it reached the cluster."))
        session.commit()


def remote_log_tail(session: Session, job: Job, lines: int = LOG_TAIL) -> str:
    """The run folder's log (every rank appends to it on the shared filesystem), else the cluster's log."""
    local = rundir.log_tail(os.path.join(job.run_dir, rundir.log_name(job.kind)), lines) if job.run_dir else ""
    if local or not job.external_id or job.target_id is None:
        return local
    return target_of(session, job).logs(job.external_id, lines)


def _stale(job: Job, now) -> bool:
    beat = job.heartbeat_at
    if beat is not None and beat.tzinfo is None:
        beat = beat.replace(tzinfo=timezone.utc)
    return beat is not None and now - beat > timedelta(seconds=HEARTBEAT_STALE_S)


def _end(session: Session, job: Job, remote: RemoteState, cancel_grace_s: float, now) -> tuple[str, str] | None:
    """The final (status, error) for a live row whose cluster job ended (or vanished), or None to wait."""
    if remote.state == "canceled" or (remote.state in ("failed", "unknown") and job.cancel_requested):
        if job.cancel_requested:
            beat = job.heartbeat_at.replace(tzinfo=timezone.utc) if job.heartbeat_at else None
            if beat is not None and now - beat < timedelta(seconds=cancel_grace_s):
                return None  # the ranks are saving and will record canceled themselves
            if job.status == JobStatus.queued.value:  # the cluster never started it: nothing ran, nothing is lost
                return JobStatus.canceled.value, "Canceled while it waited on the cluster; it had not started."
            return JobStatus.canceled.value, "Canceled; the cluster job stopped before the worker could record it."
        return JobStatus.failed.value, (f"The cluster job was stopped outside finetune-studio "
                                        f"({remote.native or 'stopped'}: {remote.reason or 'no reason given'}).")
    if remote.state == "unknown" and not _stale(job, now):
        return None  # the cluster forgot it or did not answer: the worker's own finish (or its silence) decides
    what = {"succeeded": "The cluster job ended without the worker recording a result",
            "failed": "The cluster job failed", "unknown": "The cluster lost track of the job and it went silent"}
    tail = remote_log_tail(session, job)
    reason = f"{what.get(remote.state, 'The cluster job ended')} ({remote.native or remote.state}: " \
             f"{(remote.reason or 'no reason given').strip()[:1500]})."
    return JobStatus.failed.value, reason + (f" Last lines of the log:\n{tail}" if tail else "")


def reconcile_remote(session: Session, cancel_grace_s: float) -> list[Job]:
    """Poll each live job on a target and map the cluster's state onto its row; returns the rows that ended."""
    ended: list[Job] = []
    now = utcnow()
    rows = session.exec(select(Job).where(Job.target_id.is_not(None), Job.status.in_(LIVE),
                                          Job.external_id != "")).all()
    for job in rows:
        remote = target_of(session, job).state(job.external_id)
        values: dict = {"remote_state": remote.state, "remote_reason": remote.reason[:2000]}
        if remote.state == "running" and job.status == JobStatus.queued.value:
            values.update(status=JobStatus.running.value, started_at=now, heartbeat_at=now)
        elif remote.state == "running" and _stale(job, now):
            target_of(session, job).stop(job.external_id)
            values.update(status=JobStatus.failed.value, finished_at=now, error=(
                f"No heartbeat for over {int(HEARTBEAT_STALE_S)} s while the cluster ran it; the job looked hung and "
                "was stopped on the cluster."))
        elif remote.state not in ("pending", "running"):
            end = _end(session, job, remote, cancel_grace_s, now)
            if end is not None:
                values.update(status=end[0], finished_at=now, error=end[1])
        changed = session.exec(update(Job).where(Job.id == job.id, Job.status == job.status).values(**values)).rowcount
        session.commit()
        if changed and values.get("finished_at"):
            session.refresh(job)
            ended.append(job)
    return ended
