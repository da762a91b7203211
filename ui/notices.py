"""A notice in the browser when a job of the current project ends, on whatever page the user is on.

Training and generation take minutes to hours; nobody watches the live panel all that time. ``job_notices``
is a small fragment that polls the database every few seconds and shows a toast for each job that ended since
this browser session started (each job once, even when several pages call it). Jobs the user may act on are
announced; a reviewer, who may not, hears when a generation job of the project made new answers to score, with the
eval set and where to go (Compare), and no job or system name. An annotator is told about none. Finding the jobs
that ended is core's (core.jobs.queue.ended_jobs); what this browser session has announced is Streamlit's.
"""
from __future__ import annotations

import streamlit as st

from core.accounts import can
from core.jobs.queue import ended_jobs
from core.jobs.states import KIND_WORDS
from storage.models import EvalSet, Job, JobStatus, User, utcnow
from ui.frame import db, live_fragment, md_literal

POLL = "5s"
OUTCOME_WORDS = {JobStatus.succeeded.value: "finished", JobStatus.failed.value: "failed",
                 JobStatus.canceled.value: "was canceled"}
ICONS = {JobStatus.succeeded.value: ":material/check_circle:", JobStatus.failed.value: ":material/error:",
         JobStatus.canceled.value: ":material/cancel:"}


def notice_text(job) -> str:
    """"Run 3 finished." / "Generation job 5 failed." (no user text: toasts render Markdown)."""
    return f"{KIND_WORDS.get(job.kind, 'job').capitalize()} {job.id} {OUTCOME_WORDS.get(job.status, job.status)}."


def review_notice(session, job: Job) -> str | None:
    """For a reviewer: a generation job that finished made new answers to score blind on its eval set. Names the
    eval set and the page, never the job (its name can carry a system's) nor the systems."""
    if job.kind != "generate" or job.status != JobStatus.succeeded.value or not job.eval_set_id:
        return None
    es = session.get(EvalSet, job.eval_set_id)
    if es is None:
        return None
    return f"New answers to score on eval set {md_literal(es.name)}: open Compare."


def pending_notices(session, user: User, project_id: int) -> list[tuple[str, str]]:
    """(text, icon) for each job of the project that ended since this browser session began and was not
    announced yet; marks them announced."""
    state = st.session_state
    since = state.setdefault("_job_notices_since", utcnow())
    seen: set[int] = state.setdefault("_job_notices_seen", set())
    out = []
    for job in ended_jobs(session, project_id, since):
        if job.id in seen:
            continue
        if can(user, job.action):
            text = notice_text(job)
        elif can(user, "score"):
            text = review_notice(session, job)
        else:
            text = None
        if text is None:
            continue
        seen.add(job.id)
        out.append((text, ICONS.get(job.status, ":material/info:")))
    return out


def show_job_notices(user: User, project_id: int) -> None:
    """Toast every pending notice; call it from a fragment that already polls (the Train and Generate pages'
    live panels), so a page does not need a second timer."""
    with db() as session:
        notices = pending_notices(session, user, project_id)
    for text, icon in notices:
        st.toast(text, icon=icon)


def job_notices(user: User, project_id: int) -> None:
    """A polling fragment that shows the notices, for a page (or the app frame) without a live panel of its own."""

    @live_fragment(POLL, None)  # any signed-in user; a session that ended shows the log-in form
    def _poll() -> None:
        show_job_notices(user, project_id)

    _poll()
