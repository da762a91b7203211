"""The Cancel and Resume buttons of a background job, one widget for every page that runs jobs (Train, Generate,
Datasets, Documents, the judge on Results).

Cancel shows while the job is queued or running and no cancel was asked yet; it runs in the button's on_click, so
the page that redraws after the click already shows the request. Resume shows once the job failed or was canceled,
unless a continuation of it is queued or running already (then a caption names it): the stage's own resume
function makes the continuation (a training run from its checkpoint, a generation job skipping what it wrote).
"""
from __future__ import annotations

from typing import Callable

import streamlit as st

from core.errors import StudioError
from core.jobs.queue import LIVE, cancel, live_continuation
from storage.models import Job, JobStatus, User
from ui.frame import db, flash, run_action

ENDED_BADLY = (JobStatus.failed.value, JobStatus.canceled.value)


def _cancel(user: User, job_id: int, key: str) -> None:
    try:
        with db() as s:
            cancel(s, user, job_id)
        flash(f"Cancel requested for job {job_id}.")
    except StudioError as err:
        st.session_state[f"{key}_error"] = str(err)


def job_controls(user: User, job: Job, resume: Callable, *, key: str, container=None, noun: str = "", unit: str = "job",
                 cancel_help: str | None = None, resume_help: str | None = None,
                 on_resumed: Callable[[Job], None] | None = None) -> Job | None:
    """Draw Cancel / Resume for ``job`` in ``container`` (default: the page). ``resume(session, user, job_id)``
    makes the continuation; ``on_resumed(new_job)`` runs after it (default: a confirmation and a rerun). ``noun``
    ("run 3", "draft-answers job 7") labels the buttons when several jobs share a page, ``unit`` ("job", "run")
    names it in the line saying it is being resumed; the buttons' keys are
    ``cancel<key>`` and ``resume<key>``. Returns the new job."""
    box = container if container is not None else st
    label = f" {noun}" if noun else ""
    if error := st.session_state.pop(f"{key}_error", None):
        st.error(error)
    if job.status in LIVE and not job.cancel_requested:
        box.button(f"Cancel{label}", key=f"cancel{key}", help=cancel_help, on_click=_cancel,
                   args=(user, job.id, key))
    elif job.status in LIVE:
        box.caption("Cancel requested.")
    if job.status not in ENDED_BADLY:
        return None
    with db() as s:
        continued = live_continuation(s, job)
    if continued is not None:
        st.caption(f"{unit.capitalize()} {job.id} is being resumed as {unit} {continued.id}.")
        return None
    if not box.button(f"Resume{label}", key=f"resume{key}", help=resume_help):
        return None
    with db() as s:
        new = run_action(resume, s, user, job.id)
    if new is not None:
        if on_resumed is not None:
            on_resumed(new)
        else:
            flash(f"Resumed as job {new.id}.")
            st.rerun()
    return new
